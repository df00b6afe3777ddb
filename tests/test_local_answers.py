"""Requests the proxy answers itself are counted: `mcp_proxy_local_answers_total{method,outcome}`
on /metrics, and a line of `mcpctl stats`. A call of a tool that does not exist never reaches
an upstream, so it is absent from `mcp_proxy_requests_total`; it counts here as an error.
"""

from __future__ import annotations

import re
import urllib.request

import harness
from test_admin import TOKEN, config_toml, mcpctl, mcpctl_bin  # noqa: F401 (fixture)
from test_loadgen import start_upstream


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the series `name` with exactly these labels (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_unknown_tool_is_counted_on_metrics_and_in_stats(spawner, mcpctl_bin):
    child, url = start_upstream()
    try:
        proxy = spawner.proxy(config_toml({"up": url}, None), shards=1)
        session = harness.raw_initialize(proxy.url)
        for _ in range(3):
            r, answer = harness.raw_call_tool(proxy.url, session, "echo", {"message": "hi"})
            assert answer is not None and "unknown tool: echo" in answer["error"]["message"]
        r = harness.raw_request(proxy.url, body=harness.rpc("ping"), session=session)
        assert r.status == 200
        with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        name = "mcp_proxy_local_answers_total"
        assert metric(text, name, method="tools/call", outcome="error") == 3, text
        assert metric(text, name, method="ping", outcome="ok") == 1, text
        assert "# HELP mcp_proxy_local_answers_total" in text
        stats = mcpctl(proxy, "stats")
        assert stats.returncode == 0, stats.stderr
        assert "answered by the proxy itself: 4 requests, 3 errors" in stats.stdout, stats.stdout
    finally:
        child.kill()
