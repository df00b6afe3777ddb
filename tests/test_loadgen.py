"""Smoke test of `mcp-loadgen`: its upstream serves, its load generator measures, directly and
through the proxy, with zero errors and a non-zero rate.

Environment: MCP_LOADGEN_BIN overrides the binary (default target/release/mcp-loadgen).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

import harness

LOADGEN_BIN = Path(os.environ.get("MCP_LOADGEN_BIN", harness.REPO_ROOT / "target" / "release" / "mcp-loadgen"))
READY = "mcp-loadgen upstream ready: "


def start_upstream(*args: str, timeout: float = 10.0) -> tuple[harness.Child, str]:
    """Start `mcp-loadgen upstream` on a free port and return it with its URL (from the ready line)."""
    if not LOADGEN_BIN.exists():
        raise RuntimeError(f"{LOADGEN_BIN} missing: build it with `cargo build --release --workspace`")
    child = harness.spawn("loadgen-upstream", [LOADGEN_BIN, "upstream", "--listen", "127.0.0.1:0", *args],
                          stdout=subprocess.PIPE)
    return child, harness.wait_line(child, READY, timeout)


def run_load(url: str, *args: str) -> dict:
    """`mcp-loadgen run --json` for a few seconds; returns the parsed report."""
    argv = [str(LOADGEN_BIN), "run", "--url", url, "--duration", "3s", "--warmup", "500ms", "--json", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"loadgen failed ({done.returncode}):\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture
def upstream():
    child, url = start_upstream()
    try:
        yield url
    finally:
        child.kill()


def assert_clean(report: dict) -> None:
    assert report["errors"] == 0, report["errors_by_kind"]
    assert report["ok"] > 0 and report["throughput_rps"] > 0, report
    lat = report["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], lat


def test_loadgen_direct(upstream):
    report = run_load(upstream, "--concurrency", "4", "--sessions", "4",
                      "--mix", 'tools/call:echo:{"message":"hi"}=8,tools/list=1,ping=1')
    assert_clean(report)
    assert report["settings"]["mode"] == "closed"


def test_loadgen_through_proxy(spawner, upstream):
    proxy = spawner.proxy([("up", upstream)], shards=1)
    report = run_load(proxy.url, "--concurrency", "4", "--sessions", "8",
                      "--mix", 'tools/call:up__echo:{"message":"hi"}=8,tools/list=1,ping=1')
    assert_clean(report)


def test_loadgen_open_loop_through_proxy(spawner, upstream):
    proxy = spawner.proxy([("up", upstream)], shards=1)
    report = run_load(proxy.url, "--rate", "500", "--concurrency", "4", "--mix", 'tools/call:up__echo:{"message":"hi"}')
    assert_clean(report)
    # A fixed rate for 3 s gives about 1,500 requests; a stalled schedule would give far fewer.
    assert 1300 <= report["requests"] <= 1600, report["requests"]


def test_timeline_cuts_the_window_into_slices(upstream):
    report = run_load(upstream, "--rate", "400", "--concurrency", "2", "--timeline", "500ms")
    assert_clean(report)
    slices = report["timeline"]
    assert [s["at_s"] for s in slices] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], slices
    # Every measured request is in exactly one slice, and the schedule spreads them evenly.
    assert sum(s["requests"] for s in slices) == report["requests"]
    assert all(150 <= s["requests"] <= 250 and 0 < s["p50_us"] <= s["max_us"] for s in slices), slices
    # This is Linux: the host's steal is read for every slice, and the latency without it is
    # taken over some of the slices only.
    assert all(s["host_steal_ms"] is not None and s["host_steal_ms"] >= 0 for s in slices), slices
    unstolen = report["unstolen"]
    assert unstolen["of"] == 6 and 0 <= unstolen["slices"] <= 6, unstolen
    assert unstolen["ok"] <= report["ok"], unstolen


def test_a_timeline_too_fine_for_the_run_is_refused_with_the_fix(upstream):
    argv = [str(LOADGEN_BIN), "run", "--url", upstream, "--duration", "60m", "--timeline", "100ms"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "36000 slices" in done.stderr and "use a longer slice" in done.stderr, done.stderr


def test_upstream_faults_are_counted_by_kind():
    child, url = start_upstream("--error-rate", "0.5", "--mode", "sse")
    try:
        report = run_load(url, "--concurrency", "2", "--max-error-rate", "1")
    finally:
        child.kill()
    kinds = report["errors_by_kind"]
    assert set(kinds) == {"rpc_-32603"}, kinds
    share = report["errors"] / report["requests"]
    assert 0.4 < share < 0.6, share


def test_upstream_speaks_streamable_http(upstream):
    """The upstream as a plain client sees it: sessions, 404 for unknown ones, echo's text."""
    session = harness.raw_initialize(upstream)
    r, answer = harness.raw_call_tool(upstream, session, "echo", {"message": "x"})
    assert r.status == 200 and answer is not None
    assert harness.tool_text(answer["result"]) == "Echo: x"
    r = harness.raw_request(upstream, body=harness.rpc("ping"), session="not-a-session")
    assert r.status == 404
    r = harness.raw_request(upstream, body=harness.rpc("ping"))
    assert r.status == 400


def run_load_raw(url: str, *args: str) -> subprocess.CompletedProcess:
    """`mcp-loadgen run` for a short window, whatever its exit status."""
    argv = [str(LOADGEN_BIN), "run", "--url", url, "--duration", "1s", "--warmup", "200ms", "--quiet", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_a_tool_the_server_does_not_offer_stops_the_run_and_names_what_is_offered(spawner, upstream):
    # Through the proxy `echo` is `up__echo`: the documented default mix names a tool that
    # does not exist there, and every request would fail.
    proxy = spawner.proxy([("up", upstream)], shards=1)
    done = run_load_raw(proxy.url)
    assert done.returncode != 0, done.stdout
    assert "tool `echo` is not offered" in done.stderr, done.stderr
    assert "up__echo" in done.stderr and "did you mean up__echo?" in done.stderr, done.stderr
    # No load was sent, so no report either.
    assert "throughput" not in done.stdout
    # The right name passes the check; the check can be skipped for a server without tools/list.
    assert run_load_raw(proxy.url, "--mix", 'tools/call:up__echo:{"message":"hi"}').returncode == 0
    skipped = run_load_raw(proxy.url, "--skip-tool-check", "--json", "--max-error-rate", "1")
    assert skipped.returncode == 0, skipped.stderr
    report = json.loads(skipped.stdout)
    assert report["ok"] == 0 and report["errors"] > 0
    assert "unknown tool: echo" in report["error_samples"]["rpc_-32602"]


def test_errors_above_the_threshold_fail_the_run_with_a_sample_of_each_kind():
    child, url = start_upstream("--error-rate", "0.5")
    try:
        done = run_load_raw(url, "--skip-tool-check")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "above --max-error-rate 0.01" in done.stderr, done.stderr
        # The table shows what the failures said, beside their count.
        error_line = next(l for l in done.stdout.splitlines() if "rpc_-32603" in l)
        assert "e.g. " in error_line, done.stdout
        report = json.loads(run_load_raw(url, "--skip-tool-check", "--json", "--max-error-rate", "1").stdout)
        assert report["error_samples"]["rpc_-32603"], report
        assert report["errors"] > 0
    finally:
        child.kill()


def proxy_metric(proxy: harness.Proxy, name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels`, from the admin /metrics."""
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_stateless_run_through_the_proxy_opens_no_session(spawner):
    """`--protocol 2026-07-28` loads the proxy's stateless path: every call answered, none of
    them in a session (the proxy counts the sessions it holds for stateful clients)."""
    everything = spawner.everything()
    proxy = spawner.proxy([("ev", everything.url)], shards=1)
    done = run_load_raw(proxy.url, "--protocol", "2026-07-28", "--json",
                        "--mix", 'tools/call:ev__echo:{"message":"hi"}=8,tools/list=1')
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert_clean(report)
    assert report["settings"]["protocol"] == "2026-07-28" and report["settings"]["sessions"] == 0
    calls = proxy_metric(proxy, "mcp_proxy_requests_total", method="tools/call", outcome="ok")
    assert calls >= report["ok"] * 0.8 > 0, (calls, report["ok"])
    assert proxy_metric(proxy, "mcp_proxy_sessions") == 0
    # The same run the stateful way opens sessions (its preflight's and its own): the metric
    # tells the two apart.
    stateful = run_load_raw(proxy.url, "--mix", 'tools/call:ev__echo:{"message":"hi"}')
    assert stateful.returncode == 0, stateful.stderr
    assert proxy_metric(proxy, "mcp_proxy_sessions") >= 1


def test_a_stateless_run_as_several_clients_spreads_over_the_shards(spawner):
    """The proxy serves each 2026-07-28 client (its identity) on one owner shard. One client's
    load therefore stays on one shard; `--clients 8` is eight clients, each with its own bridge
    session, and they land on both shards."""
    everything = spawner.everything()
    proxy = spawner.proxy([("ev", everything.url)], shards=2)
    mix = 'tools/call:ev__echo:{"message":"hi"}'
    one = run_load_raw(proxy.url, "--protocol", "2026-07-28", "--json", "--mix", mix)
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout)["settings"]["clients"] == 1
    per_shard = [proxy_metric(proxy, "mcp_proxy_bridge_sessions", shard=str(s)) for s in (0, 1)]
    assert sorted(per_shard) == [0, 1], per_shard

    eight = run_load_raw(proxy.url, "--protocol", "2026-07-28", "--json", "--clients", "8", "--mix", mix)
    assert eight.returncode == 0, eight.stderr
    report = json.loads(eight.stdout)
    assert_clean(report)
    assert report["settings"]["clients"] == 8
    per_shard = [proxy_metric(proxy, "mcp_proxy_bridge_sessions", shard=str(s)) for s in (0, 1)]
    assert sum(per_shard) == 9 and min(per_shard) >= 1, per_shard

    # Clients are the stateful era's sessions: the option says so rather than doing nothing.
    stateful = run_load_raw(proxy.url, "--clients", "4", "--mix", mix)
    assert stateful.returncode != 0 and "use --sessions" in stateful.stderr, stateful.stderr


def test_stateless_run_direct_to_a_sessionless_upstream():
    child, url = start_upstream("--stateless", "--mode", "sse")
    try:
        done = run_load_raw(url, "--protocol", "2026-07-28", "--json", "--concurrency", "2",
                            "--mix", 'tools/call:echo:{"message":"hi"}=8,tools/list=1,ping=1')
    finally:
        child.kill()
    assert done.returncode == 0, done.stderr
    assert_clean(json.loads(done.stdout))


def test_stateless_run_stops_at_preflight_on_an_unknown_tool(spawner):
    everything = spawner.everything()
    proxy = spawner.proxy([("ev", everything.url)], shards=1)
    done = run_load_raw(proxy.url, "--protocol", "2026-07-28")
    assert done.returncode != 0, done.stdout
    assert "tool `echo` is not offered" in done.stderr, done.stderr
    assert "did you mean ev__echo?" in done.stderr, done.stderr
    assert "throughput" not in done.stdout
    # It is the stateful mode's message, word for word.
    stateful = run_load_raw(proxy.url)
    assert stateful.returncode != 0
    assert done.stderr == stateful.stderr


def test_stateless_run_refuses_session_options(upstream):
    done = run_load_raw(upstream, "--protocol", "2026-07-28", "--sessions", "4")
    assert done.returncode != 0
    assert "--sessions has no meaning with --protocol 2026-07-28" in done.stderr, done.stderr
