"""Observability: a real Prometheus scraping the proxy, the dashboards and rules against /metrics,
the merged latency quantiles of /stats, and structured logs that never carry secrets.

Prometheus is the Debian package (`prometheus`, with `promtool`), started by the test on a free
port with a 1 s scrape interval and killed with the other children.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import harness

DASHBOARDS = harness.REPO_ROOT / "dashboards"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")

# Every metric the proxy exports (proxy/src/metrics/mod.rs, `names::ALL`).
EXPORTED = [
    "mcp_proxy_requests_total",
    "mcp_proxy_request_duration_seconds",
    "mcp_proxy_upstream_duration_seconds",
    "mcp_proxy_inflight_requests",
    "mcp_proxy_sessions",
    "mcp_proxy_bridge_sessions",
    "mcp_proxy_connections",
    "mcp_proxy_connections_total",
    "mcp_proxy_upstream_up",
    "mcp_proxy_bytes_received_total",
    "mcp_proxy_bytes_sent_total",
    "mcp_proxy_balancer_picks_total",
    "mcp_proxy_balancer_panic",
    "mcp_proxy_balancer_panic_picks_total",
    "mcp_proxy_retries_total",
    "mcp_proxy_failovers_total",
    "mcp_proxy_health_probes_total",
    "mcp_proxy_replica_healthy",
    "mcp_proxy_circuit_open",
    "mcp_proxy_child_restarts_total",
    "mcp_proxy_child_failed",
    "mcp_proxy_event_streams",
    "mcp_proxy_event_streams_ended_total",
]
# Series that exist only when a stdio server is configured.
STDIO_ONLY = {"mcp_proxy_child_restarts_total", "mcp_proxy_child_failed"}
HISTOGRAMS = {"mcp_proxy_request_duration_seconds", "mcp_proxy_upstream_duration_seconds"}

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus/promtool not installed (tests/run.sh installs the Debian package)",
)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def sample_names(exposition: str) -> set[str]:
    """Names of the samples in a Prometheus text exposition."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def call_echo(url: str, session: str, server: str, i: int) -> None:
    r, answer = harness.raw_call_tool(url, session, f"{server}__echo", {"message": f"m{i}"})
    assert r.status == 200 and answer is not None and "result" in answer, (r.status, r.body[:300])


class Prometheus:
    """A Prometheus server scraping `target` (host:port) every second, evaluating the alert
    rules of `rules` (a file) every second when given."""

    def __init__(self, target: str, tmp: Path, rules: Path | None = None) -> None:
        self.port = harness.free_port()
        config = tmp / "prometheus.yml"
        rule_files = f"rule_files:\n  - '{rules}'\n" if rules else ""
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + rule_files +
            "scrape_configs:\n  - job_name: mcp-proxy\n    scrape_interval: 1s\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.child = harness.spawn("prometheus", [
            PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ])
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_get(f"{self.base}/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            if self.child.proc.poll() is not None or time.monotonic() > deadline:
                self.child.kill()
                raise RuntimeError(f"prometheus did not start:\n{self.child.stderr_tail()}")
            time.sleep(0.2)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> list[dict]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return doc["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        """The alerts pending or firing now."""
        status, body = http_get(f"{self.base}/api/v1/alerts")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", body
        return doc["data"]["alerts"]

    def kill(self) -> None:
        self.child.kill()


@pytest.fixture(scope="module")
def topo():
    """alpha and beta behind a proxy of its own (so request counts are this module's only)."""
    started: list = []
    try:
        alpha = harness.start_everything_http()
        started.append(alpha)
        beta = harness.start_everything_http()
        started.append(beta)
        proxy = harness.start_proxy([("alpha", alpha.url), ("beta", beta.url)], shards=2)
        started.append(proxy)
        assert proxy.admin_url, "the proxy printed no `mcp-proxy admin:` line"
        yield proxy
    finally:
        for p in reversed(started):
            p.kill()


@needs_prometheus
def test_prometheus_scrapes_the_proxy_while_calls_flow(topo, tmp_path):
    target = topo.admin_url.split("://", 1)[1]
    prom = Prometheus(target, tmp_path)
    try:
        session = harness.raw_initialize(topo.url)
        calls = {"alpha": 0, "beta": 0}
        # About 4 s of calls, so several scrapes happen while they flow.
        deadline = time.monotonic() + 4
        i = 0
        while time.monotonic() < deadline or i < 30:
            server = "alpha" if i % 3 else "beta"
            call_echo(topo.url, session, server, i)
            calls[server] += 1
            i += 1
            time.sleep(0.02)
        total = sum(calls.values())

        expr = 'sum(mcp_proxy_requests_total{method="tools/call",outcome="ok"})'
        seen = None
        end = time.monotonic() + 20
        while time.monotonic() < end:
            seen = prom.value(expr)
            if seen == total:
                break
            time.sleep(0.5)
        assert seen == total, f"Prometheus says {seen} tools/call, {total} were made"
        for server, n in calls.items():
            got = prom.value(f'mcp_proxy_requests_total{{server="{server}",method="tools/call",outcome="ok"}}')
            assert got == n, (server, got, n)

        # The scrape target is healthy and every exported series is there.
        assert prom.value('up{job="mcp-proxy"}') == 1.0
        names = {r["metric"]["__name__"] for r in prom.query('{__name__=~"mcp_proxy_.*"}')}
        for name in EXPORTED:
            if name in STDIO_ONLY:
                continue  # this topology has no stdio server; the dashboard test has one
            wanted = f"{name}_count" if name in HISTOGRAMS else name
            assert wanted in names, f"{wanted} not in Prometheus: {sorted(names)}"
        assert prom.value('count(mcp_proxy_connections)') == 2.0, "one connections series per shard"
        assert prom.value('sum(mcp_proxy_upstream_up)') == 2.0
        assert prom.value('sum(mcp_proxy_sessions)') >= 1.0
        assert prom.value('sum(mcp_proxy_bytes_received_total)') > 0
        assert prom.value('sum(mcp_proxy_upstream_duration_seconds_count{server="alpha"})') == calls["alpha"]
        # A quantile from the histogram buckets, as the dashboard computes it.
        p99 = prom.value('histogram_quantile(0.99, sum by (le) (mcp_proxy_upstream_duration_seconds_bucket))')
        assert p99 is not None and 0 < p99 < 30
    finally:
        prom.kill()


def test_stats_merges_shard_histograms(topo):
    session = harness.raw_initialize(topo.url)
    _, before = http_get(f"{topo.admin_url}/stats")
    before = json.loads(before)
    for i in range(12):
        call_echo(topo.url, session, "beta", i)
    # Shards publish once a second.
    time.sleep(1.5)
    status, body = http_get(f"{topo.admin_url}/stats")
    assert status == 200
    stats = json.loads(body)
    beta = stats["servers"]["beta"]
    # overhead: the proxy's own time on each of those requests, without the upstream's.
    for kind in ("request", "upstream", "overhead"):
        q = beta[kind]
        assert q["count"] - before["servers"]["beta"][kind]["count"] == 12, (kind, q)
        assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["p99_9"] <= q["max"], q
    assert beta["upstream"]["p50"] <= beta["request"]["p50"]
    # The same, for Prometheus: a histogram per server, with buckets fine enough for
    # microseconds (the request histograms start at 0.5 ms).
    _, text = http_get(f"{topo.admin_url}/metrics")
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("mcp_proxy_overhead_seconds_count")}
    assert counts.get('mcp_proxy_overhead_seconds_count{server="beta"}', 0) >= 12, counts
    assert 'mcp_proxy_overhead_seconds_bucket{server="beta",le="0.00001"}' in text
    assert len(stats["shards"]) == 2
    assert sum(s["end_to_end_count"] for s in stats["shards"]) == stats["end_to_end"]["count"]

    status, body = http_get(f"{topo.admin_url}/healthz")
    assert status == 200 and json.loads(body) == {
        "status": "ok", "shards": 2, "servers": {"alpha": "up", "beta": "up"}}


def used_metric_names() -> dict[str, set[str]]:
    """Metric names in the dashboard's and the rules' expressions, by file."""
    dash = json.loads((DASHBOARDS / "grafana" / "mcp-proxy.json").read_text())
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                elif k == "query" and isinstance(v, dict):
                    exprs.append(v.get("query", ""))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash)
    rules = (DASHBOARDS / "alerts.yml").read_text()
    rule_exprs = []
    # `expr: ...` either on one line or as a block scalar (`expr: |` and indented lines).
    lines = rules.splitlines()
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2).strip() not in ("|", ">"):
            rule_exprs.append(m.group(2))
            continue
        indent = len(m.group(1))
        for nxt in lines[n + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            rule_exprs.append(nxt)
    pattern = re.compile(r"\bmcp_proxy_[a-z_]+")
    return {
        "dashboard": {m for e in exprs for m in pattern.findall(e)},
        "rules": {m for e in rule_exprs for m in pattern.findall(e)},
    }


def test_dashboard_and_rules_use_only_exported_metrics(spawner):
    # A proxy with an HTTP server and a stdio one, so replica and child series exist too.
    alpha = spawner.everything()
    config = harness.servers_toml([("alpha", alpha.url)]) + (
        f'\n[[servers]]\nname = "evstdio"\ncommand = "{harness.EVERYTHING_BIN}"\nargs = ["stdio"]\n'
    )
    proxy = spawner.proxy(config)
    session = harness.raw_initialize(proxy.url)
    call_echo(proxy.url, session, "alpha", 0)
    deadline = time.time() + 15
    while True:
        status, text = http_get(f"{proxy.admin_url}/metrics")
        exported = sample_names(text)
        # Health gauges appear with the first round of health checks.
        if "mcp_proxy_replica_healthy" in exported or time.time() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    for name in EXPORTED:
        wanted = f"{name}_bucket" if name in HISTOGRAMS else name
        assert wanted in exported, f"{wanted} missing from /metrics"
    used = used_metric_names()
    assert used["dashboard"] and used["rules"]
    for where, names in used.items():
        # Besides these, the rules use only `up`, which Prometheus writes for every target.
        for name in names:
            assert name in exported, f"{where} uses {name}, which /metrics does not export"


@needs_prometheus
def test_promtool_accepts_config_and_rules():
    for args in (["check", "config", DASHBOARDS / "prometheus.yml"],
                 ["check", "rules", DASHBOARDS / "alerts.yml"]):
        r = subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{r.stdout}\n{r.stderr}"


def test_json_logs_carry_servers_and_never_secrets(spawner):
    up = spawner.everything()
    secret = "sekrit-0123456789"
    config = harness.servers_toml([("alpha", up.url)]).replace(
        'timeout = "30s"', f'timeout = "30s"\nheaders = {{ Authorization = "Bearer {secret}", X-Api-Key = "{secret}-key" }}')
    proxy = harness.start_proxy(config, extra_args=["--log-format", "json", "--log-level", "trace"])
    try:
        session = harness.raw_initialize(proxy.url)
        call_echo(proxy.url, session, "alpha", 1)
    finally:
        proxy.kill()
    text = proxy.child.stderr_path.read_text()
    assert secret not in text, "a configured header value was logged"
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records, "no log records"
    for r in records:
        assert {"ts", "level", "target", "msg"} <= r.keys(), r
    assert any(r.get("server") == "alpha" and "discovered" in r["msg"] for r in records), records[:5]
    assert any("shard" in r for r in records)
