"""The catalog follows a 2026-07-28 server's lists, which no session carries changes of.

Topology: the Python SDK's MCPServer answering 2026-07-28 statelessly
(tests/fixtures/stateless_server.py) behind a proxy with two shards. Discovery opens the
server's own `subscriptions/listen` for list changes and lists it again when the stream ends and
opens again (a restart), and at each `list_changed`; a list's `ttlMs` also has it listed again
when it expires (at least 5 s apart).

The server is restarted on the same port with a tool it did not have (`late_tool`): clients of
both eras see it through the proxy without any action of theirs (before, the proxy kept the old
list until it was restarted itself).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

import harness
from harness import ACCEPT_BOTH, raw_request, sdk_session

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stateless_server.py"
MODERN = "2026-07-28"
# How long to wait for the new tool: far above the proxy's reopen backoff (at most 5 s), far
# below "never".
PATIENCE = 60.0


def start_server(port: int, extra_tool: str | None = None) -> harness.Child:
    env = {"EXTRA_TOOL": extra_tool} if extra_tool else None
    child = harness.spawn("modern", [sys.executable, str(FIXTURE), str(port), "modern"], env=env)
    harness.wait_for_port(port, child)
    return child


def modern_tools(url: str) -> set[str]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {}}}}
    r = raw_request(url, body=body, headers={"Accept": ACCEPT_BOTH, "MCP-Protocol-Version": MODERN,
                                             "Mcp-Method": "tools/list"})
    assert r.status == 200, r.body
    return {t["name"] for t in r.messages[0]["result"]["tools"]}


def stateful_tools(url: str) -> set[str]:
    async def go():
        async with sdk_session(url) as s:
            return {t.name for t in (await s.list_tools()).tools}

    return anyio.run(go)


@pytest.mark.timeout(180)
def test_a_restarted_server_with_a_new_tool_is_listed_through_the_proxy():
    port = harness.free_port()
    server = start_server(port)
    proxy = None
    try:
        proxy = harness.start_proxy(
            f'[[servers]]\nname = "modern"\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = "30s"\n', shards=2)
        before = modern_tools(proxy.url)
        assert "modern__shout" in before and "modern__late_tool" not in before, before

        server.kill()
        server = start_server(port, extra_tool="late_tool")
        restarted = time.monotonic()
        seen = set()
        while time.monotonic() - restarted < PATIENCE:
            seen = modern_tools(proxy.url)
            if "modern__late_tool" in seen:
                break
            time.sleep(0.5)
        print(f"late_tool listed {time.monotonic() - restarted:.1f} s after the restart")
        assert "modern__late_tool" in seen, f"still the old list after {PATIENCE} s: {sorted(seen)}"
        assert "modern__late_tool" in stateful_tools(proxy.url)
    finally:
        if proxy is not None:
            proxy.kill()
        server.kill()
