"""Log messages of a stateful upstream reach 2026-07-28 clients through the bridge.

The 2026-07-28 era has no `logging/setLevel` and no GET stream: a request opts in to log messages
with `_meta["io.modelcontextprotocol/logLevel"]` and gets them on its own response stream, at or
above that level; a request without it gets none. A stateful upstream logs to its session
instead (server-everything's `toggle-simulated-logging` sends one message at once and then one
every 5 s, at a random level, on the session's GET stream). The proxy relays those messages to
the bridged calls of that session which opted in and are open, each filtered by its own level.

Topology: server-everything (Streamable HTTP), one proxy with one shard (calls accepted on
different shards meet in one bridge session too: tests/test_stateless_shards.py). Raw HTTP, so the
test sees exactly what arrives on the response stream.
"""

from __future__ import annotations

import harness
from harness import ACCEPT_BOTH, raw_request

MODERN = "2026-07-28"
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]


def call(url: str, tool: str, arguments: dict, log_level: str | None, request_id: int, timeout: float = 60.0):
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "log-reader", "version": "1"},
    }
    if log_level is not None:
        meta["io.modelcontextprotocol/logLevel"] = log_level
    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments, "_meta": meta}}
    headers = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json", "MCP-Protocol-Version": MODERN,
               "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return raw_request(url, body=body, headers=headers, timeout=timeout)


def logs_of(response) -> list[dict]:
    return [m for m in response.messages if m.get("method") == "notifications/message"]


def test_log_messages_of_a_stateful_upstream_reach_the_calls_that_opted_in(spawner):
    everything = spawner.everything()
    proxy = spawner.proxy(harness.servers_toml([("alpha", everything.url)]), shards=1)

    started = call(proxy.url, "alpha__toggle-simulated-logging", {}, "debug", 1)
    answer = started.response_for(1)
    assert answer is not None and "result" in answer, (started.status, started.body)
    assert "Started" in harness.tool_text(answer["result"]), answer
    try:
        # A call that lasts longer than the server's 5 s logging pace sees at least one message.
        opted_in = call(proxy.url, "alpha__trigger-long-running-operation", {"duration": 7, "steps": 2},
                        "debug", 2)
        assert opted_in.response_for(2) is not None and "result" in opted_in.response_for(2), opted_in.body
        got = logs_of(opted_in)
        assert got, f"no log message reached a call that asked for debug:\n{opted_in.body[:3000]!r}"
        assert all(m["params"]["level"] in LEVELS for m in got), got

        # The same session, a call without the opt-in: the era says no log messages.
        silent = call(proxy.url, "alpha__trigger-long-running-operation", {"duration": 7, "steps": 2}, None, 3)
        assert silent.response_for(3) is not None and "result" in silent.response_for(3), silent.body
        assert not logs_of(silent), f"log messages reached a call that did not ask:\n{silent.body[:3000]!r}"

        # Opted in at the highest level: only emergency messages may arrive.
        high = call(proxy.url, "alpha__trigger-long-running-operation", {"duration": 7, "steps": 2},
                    "emergency", 4)
        assert high.response_for(4) is not None, high.body
        assert all(m["params"]["level"] == "emergency" for m in logs_of(high)), logs_of(high)
    finally:
        call(proxy.url, "alpha__toggle-simulated-logging", {}, None, 5)
