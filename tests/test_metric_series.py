"""What /metrics exports, checked the way operators' tools check it.

- `promtool check metrics` finds nothing to fix in a scrape of a proxy with a replica'd HTTP
  server and a stdio one (every family has HELP text); `mcp_proxy_build_info` and the
  `process_*` metrics are there with believable values.
- The dashboard's replica and retry panels follow `$server` and `$__rate_interval`, and its
  error ratio is 0 (not empty) for a server with traffic and no failure.
- A server removed through the admin API takes every series with it from /metrics (and its
  entry from /stats), and Prometheus, loaded with the shipped alert rules, stops alerting for
  it: a down HTTP server and a crash-looping stdio one both alert while they exist and neither
  does once removed. `promtool test rules` shows the windowed rules stop too. A replica that
  an update drops leaves /metrics as well.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import harness
from test_metrics import DASHBOARDS, PROMTOOL, Prometheus, call_echo, http_get, needs_prometheus

TOKEN = "metric-series-admin-token-0123456789"


def samples(text: str) -> list[tuple[str, str, float]]:
    """(name, labels, value) of every sample in an exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        assert m, f"not a sample line: {line!r}"
        out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def metrics_text(proxy: harness.Proxy) -> str:
    status, text = http_get(f"{proxy.admin_url}/metrics")
    assert status == 200
    return text


def admin(proxy: harness.Proxy, method: str, path: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{proxy.admin_url}/api/v1/{path}", method=method, data=data,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from None


@needs_prometheus
def test_promtool_finds_nothing_to_fix_and_process_metrics_are_sane(spawner, tmp_path):
    a1, a2 = spawner.everything(), spawner.everything()
    config = (
        '[[servers]]\nname = "alpha"\nreplicas = [\n'
        f'  {{ url = "{a1.url}" }},\n  {{ url = "{a2.url}" }},\n]\n'
        'health_check_interval = "1s"\n\n'
        f'[[servers]]\nname = "evstdio"\ncommand = "{harness.EVERYTHING_BIN}"\nargs = ["stdio"]\n'
    )
    proxy = spawner.proxy(config)
    session = harness.raw_initialize(proxy.url)
    call_echo(proxy.url, session, "alpha", 0)
    call_echo(proxy.url, session, "evstdio", 1)
    def with_health() -> str | None:
        text = metrics_text(proxy)
        return text if "mcp_proxy_replica_healthy{" in text else None

    text = wait_for(with_health, 20, "replica health series")

    scrape = tmp_path / "scrape.txt"
    scrape.write_text(text)
    with scrape.open() as f:
        r = subprocess.run([PROMTOOL, "check", "metrics"], stdin=f, capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), (
        f"promtool check metrics:\n{r.stdout}{r.stderr}")

    got = samples(text)
    by_name: dict[str, list[tuple[str, float]]] = {}
    for name, labels, value in got:
        by_name.setdefault(name, []).append((labels, value))
    # Every family with samples has HELP text (promtool above says so too).
    helped = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    for name in by_name:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert family in helped or name in helped, f"{name} has no HELP"

    [(labels, value)] = by_name["mcp_proxy_build_info"]
    assert value == 1 and re.search(r'version="\d+\.\d+\.\d+', labels), labels

    def one(name: str) -> float:
        [(labels, value)] = by_name[name]
        assert labels == "", (name, labels)
        return value

    now = time.time()
    assert now - 3600 < one("process_start_time_seconds") <= now + 1
    assert one("process_cpu_seconds_total") > 0
    assert one("process_resident_memory_bytes") > 1_000_000
    assert one("process_virtual_memory_bytes") >= one("process_resident_memory_bytes")
    assert 3 <= one("process_open_fds") <= one("process_max_fds")
    assert one("process_threads") >= 2  # at least two shards


def test_dashboard_panels_follow_server_and_rate_interval():
    dash = json.loads((DASHBOARDS / "grafana" / "mcp-proxy.json").read_text())
    panels = {p["title"]: p for p in dash["panels"]}
    named = [
        "Balancer picks per second by replica",
        "Replica health and open circuits",
        "Retries, failovers and child restarts",
        "Health checks per second by replica and outcome",
    ]
    for title in named:
        for t in panels[title]["targets"]:
            expr = t["expr"]
            assert 'server=~"$server"' in expr, f"{title}: {expr} ignores $server"
            if "rate(" in expr or "increase(" in expr:
                assert "[$__rate_interval]" in expr, f"{title}: {expr} has a fixed window"
    ratio = panels["Error ratio by server"]["targets"][0]["expr"]
    # The failure numerator falls back to 0 per server with traffic, so a healthy server
    # shows 0 rather than no data.
    assert re.search(r"\bor\s+0\s*\*\s*sum by \(server\)", ratio), ratio
    end_to_end = panels["End-to-end latency quantiles"]["description"]
    assert "refuses itself" in end_to_end or "refused" in end_to_end, end_to_end


def alert_rules_for_tests(tmp: Path) -> Path:
    """The shipped rules with every `for:` shortened to 1s, so the test is quick."""
    rules = (DASHBOARDS / "alerts.yml").read_text()
    rules = re.sub(r"^(\s*)for: \S+$", r"\1for: 1s", rules, flags=re.M)
    out = tmp / "alerts.yml"
    out.write_text(rules)
    return out


def alerts_for(prom: Prometheus, servers: set[str]) -> list[tuple[str, str, str]]:
    return [(a["labels"].get("alertname"), a["labels"].get("server"), a["state"])
            for a in prom.alerts() if a["labels"].get("server") in servers]


@needs_prometheus
def test_removed_servers_leave_metrics_and_stop_alerting(spawner, tmp_path):
    alpha = spawner.everything()
    proxy = spawner.proxy(f'[proxy]\nadmin_token = "{TOKEN}"\n\n'
                          + harness.servers_toml([("alpha", alpha.url)]), shards=1)
    prom = Prometheus(proxy.admin_url.removeprefix("http://").rstrip("/"), tmp_path,
                      rules=alert_rules_for_tests(tmp_path))
    try:
        nowhere = harness.free_port()
        assert admin(proxy, "POST", "servers",
                     {"name": "four", "url": f"http://127.0.0.1:{nowhere}/mcp"}) == 201
        assert admin(proxy, "POST", "servers",
                     {"name": "five", "command": "/bin/sh", "args": ["-c", "exit 3"]}) == 201
        gone = {"four", "five"}

        # While they exist, they are down and alert (the rules see their series).
        wait_for(lambda: 'mcp_proxy_child_failed{server="five"} 1' in metrics_text(proxy),
                 40, "five given up after its crash loop")
        assert 'mcp_proxy_upstream_up{server="four"} 0' in metrics_text(proxy)
        wait_for(lambda: {("McpProxyUpstreamDown", "four"),
                          ("McpProxyStdioServerCrashLooping", "five")}
                 <= {(n, s) for n, s, _ in alerts_for(prom, gone)},
                 30, "alerts for four and five")

        assert admin(proxy, "DELETE", "servers/four") in (200, 204)
        assert admin(proxy, "DELETE", "servers/five") in (200, 204)

        def leftovers() -> list[str]:
            return [f"{n}{l}" for n, l, _ in samples(metrics_text(proxy))
                    if re.search(r'server="(four|five)"', l)]

        try:
            wait_for(lambda: not leftovers(), 5, "no series of four and five")
        except AssertionError:
            raise AssertionError(f"series of removed servers still exported: {leftovers()}")
        text = metrics_text(proxy)
        assert 'mcp_proxy_upstream_up{server="alpha"} 1' in text, "alpha's series went too"
        stats = json.loads(http_get(f"{proxy.admin_url}/stats")[1])
        assert set(stats["servers"]) == {"alpha"}, stats["servers"]

        try:
            wait_for(lambda: not alerts_for(prom, gone), 20, "no alert for four and five")
        except AssertionError:
            raise AssertionError(f"alerts for removed servers: {alerts_for(prom, gone)}")
    finally:
        prom.kill()


@needs_prometheus
def test_shipped_rules_stop_alerting_when_a_servers_series_stop(tmp_path):
    """`promtool test rules` on the shipped rules: a stdio server that restarted often, and a
    down one, alert while their series are scraped and not once the series stop (the server
    was removed), although the restarts are still inside the rule's 10-minute window."""
    labels = 'job="mcp-proxy",instance="proxy:9464"'
    crash_summary = "stdio server five keeps crashing"
    crash_description = (
        "Its child process restarted more than 3 times in 10 minutes, or the proxy gave up on "
        "it after a crash loop; check its command and its stderr in the proxy's log.")
    down_summary = "Upstream MCP server four is down"
    down_description = (
        "Discovery has not reached four for 1 minute; its tools, prompts and resources are "
        "not offered.")
    spec = {
        "rule_files": [str(DASHBOARDS / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # Restarted every minute, then removed at 6m (the series stops).
                {"series": f'mcp_proxy_child_restarts_total{{{labels},server="five"}}',
                 "values": "0 1 2 3 4 5 stale"},
                {"series": f'mcp_proxy_child_failed{{{labels},server="five"}}',
                 "values": "0 0 0 0 0 0 stale"},
                # Down from the start, removed at 6m.
                {"series": f'mcp_proxy_upstream_up{{{labels},server="four"}}',
                 "values": "0 0 0 0 0 0 stale"},
                {"series": f'up{{{labels}}}', "values": "1+0x12"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "McpProxyStdioServerCrashLooping",
                 "exp_alerts": [{
                     "exp_labels": {"job": "mcp-proxy", "instance": "proxy:9464",
                                    "server": "five", "severity": "critical"},
                     "exp_annotations": {"summary": crash_summary,
                                         "description": crash_description}}]},
                {"eval_time": "5m", "alertname": "McpProxyUpstreamDown",
                 "exp_alerts": [{
                     "exp_labels": {"job": "mcp-proxy", "instance": "proxy:9464",
                                    "server": "four", "severity": "critical"},
                     "exp_annotations": {"summary": down_summary,
                                         "description": down_description}}]},
                {"eval_time": "8m", "alertname": "McpProxyStdioServerCrashLooping",
                 "exp_alerts": []},
                {"eval_time": "8m", "alertname": "McpProxyUpstreamDown", "exp_alerts": []},
            ],
        }],
    }
    # JSON is YAML.
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(json.dumps(spec, indent=1))
    r = subprocess.run([PROMTOOL, "test", "rules", test_file], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"promtool test rules:\n{r.stdout}\n{r.stderr}"


def test_a_replica_dropped_by_an_update_leaves_metrics(spawner):
    r1, r2 = spawner.everything(), spawner.everything()
    proxy = spawner.proxy(
        f'[proxy]\nadmin_token = "{TOKEN}"\n\n[[servers]]\nname = "ev"\nreplicas = [\n'
        f'  {{ url = "{r1.url}" }},\n  {{ url = "{r2.url}" }},\n]\n'
        'health_check_interval = "1s"\n', shards=1)

    def replicas() -> set[str]:
        return {m.group(1) for _, l, _ in samples(metrics_text(proxy))
                if (m := re.search(r'replica="([^"]+)"', l))}

    wait_for(lambda: {r1.url, r2.url} <= replicas(), 20, "series of both replicas")
    assert admin(proxy, "PUT", "servers/ev", {
        "name": "ev", "replicas": [{"url": r1.url}], "health_check_interval": "1s"}) == 200
    try:
        wait_for(lambda: r2.url not in replicas(), 5, "no series of the dropped replica")
    except AssertionError:
        raise AssertionError(f"the dropped replica is still exported: {replicas()}")
    assert r1.url in replicas()
