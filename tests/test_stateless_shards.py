"""One bridge session per 2026-07-28 client, whichever shard accepted each of its connections.

A 2026-07-28 client has no session: its `subscriptions/listen` streams and its calls are separate
HTTP requests, and the kernel spreads their connections over the proxy's shards (SO_REUSEPORT).
The proxy serves every such request of one client (same principal, capabilities and clientInfo)
on one owner shard, through one bridge session and so one upstream session. A server that
notifies only the session that asked then reaches all of them: server-everything's
`toggle-subscriber-updates` sends resource updates, and `toggle-simulated-logging` log messages,
only to the upstream session whose call switched them on.

Topology: server-everything (Streamable HTTP) behind one proxy with two shards. Raw HTTP, each
request on a new TCP connection; the proxy's per-shard connection counter (admin `/metrics`)
shows that both shards accepted some of them.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import harness
from harness import raw_request
from test_stateless import modern_body, modern_headers, wait_for_log

CONNECTIONS = 8


def next_message(stream, deadline: float | None = None) -> dict:
    """The next JSON-RPC message of an SSE stream, skipping events without one."""
    while True:
        ev = stream.next_event(deadline)
        assert ev is not None, "the listen stream ended"
        if "message" in ev:
            return ev["message"]


def connections_per_shard(proxy: harness.Proxy) -> dict[str, float]:
    """`mcp_proxy_connections_total` by shard label, from the admin listener's /metrics."""
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for m in re.finditer(r'^mcp_proxy_connections_total\{[^}]*shard="(\d+)"[^}]*\} (\S+)$', text, re.M):
        counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(2))
    return counts


def assert_both_shards_accepted(proxy: harness.Proxy) -> None:
    counts = connections_per_shard(proxy)
    assert counts.get("0", 0) > 0 and counts.get("1", 0) > 0, (
        f"the connections did not reach both shards, so this run shows nothing: {counts}")


def call_tool(url: str, tool: str, arguments: dict, log_level: str | None = None, request_id=1,
              timeout: float = 60.0):
    body = modern_body("tools/call", {"name": tool, "arguments": arguments}, request_id=request_id)
    if log_level is not None:
        body["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = log_level
    return raw_request(url, body=body, headers=modern_headers("tools/call", tool), timeout=timeout)


def test_listen_streams_on_any_shard_get_updates_switched_on_by_a_call_on_another_connection(spawner):
    """Listen streams opened on separate connections (both shards) each subscribe to a resource;
    a call on yet another connection switches server-everything's updates on for its upstream
    session; every listen stream gets `notifications/resources/updated`, and when they have all
    closed the upstream subscription is ended."""
    alpha = spawner.everything()
    proxy = spawner.proxy(harness.servers_toml([("alpha", alpha.url)]), shards=2)
    from test_relay import SseStream

    listed = raw_request(proxy.url, body=modern_body("resources/list"), headers=modern_headers("resources/list"))
    uri = next(r["uri"] for r in listed.messages[0]["result"]["resources"]
               if r["uri"].startswith("alpha+demo://resource/static/document/"))

    streams: list[SseStream] = []
    toggle = "alpha__toggle-subscriber-updates"
    try:
        for n in range(CONNECTIONS):
            body = modern_body("subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}},
                               request_id=f"watch-{n}")
            stream = SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=30)
            streams.append(stream)
            assert stream.status == 200, stream.status
            ack = next_message(stream)
            assert ack["params"]["notifications"] == {"resourceSubscriptions": [uri]}, ack

        r = call_tool(proxy.url, toggle, {})
        assert "Started simulated resource updated" in r.messages[0]["result"]["content"][0]["text"], r.body
        assert_both_shards_accepted(proxy)

        # server-everything sends the updates every 5 s; a stream still silent after 30 s never
        # gets one (keep-alive comments do not count).
        deadline = time.monotonic() + 30
        for n, stream in enumerate(streams):
            try:
                message = next_message(stream, deadline)
            except TimeoutError:
                raise AssertionError(f"listen stream {n} got no resource update") from None
            assert message["method"] == "notifications/resources/updated", message
            assert message["params"]["uri"] == uri
            assert message["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == f"watch-{n}"

        # Clients that leave end the work serving them on the owner shard, across the mesh too:
        # once the last stream is gone, the upstream subscription is ended.
        for stream in streams:
            stream.abort()
        wait_for_log(proxy, f"ended the upstream subscription to {uri}")
    finally:
        for stream in streams:
            stream.abort()


def test_log_messages_reach_calls_on_any_shard_when_logging_was_switched_on_elsewhere(spawner):
    """One call switches server-everything's simulated logging on; calls that opted in to log
    messages, each on its own connection (both shards), all get some while they run."""
    everything = spawner.everything()
    proxy = spawner.proxy(harness.servers_toml([("alpha", everything.url)]), shards=2)

    started = call_tool(proxy.url, "alpha__toggle-simulated-logging", {}, "debug", request_id=1)
    answer = started.response_for(1)
    assert answer is not None and "result" in answer, (started.status, started.body)
    assert "Started" in harness.tool_text(answer["result"]), answer
    try:
        results: dict[int, object] = {}

        def long_call(n: int) -> None:
            # Longer than the server's 5 s logging pace: at least one message falls inside.
            results[n] = call_tool(proxy.url, "alpha__trigger-long-running-operation",
                                   {"duration": 7, "steps": 2}, "debug", request_id=100 + n)

        threads = [threading.Thread(target=long_call, args=(n,)) for n in range(CONNECTIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert_both_shards_accepted(proxy)
        for n in range(CONNECTIONS):
            r = results.get(n)
            assert r is not None, f"call {n} did not finish"
            done = r.response_for(100 + n)
            assert done is not None and "result" in done, r.body
            logs = [m for m in r.messages if m.get("method") == "notifications/message"]
            assert logs, f"no log message reached call {n}, which asked for debug:\n{r.body[:2000]!r}"
    finally:
        call_tool(proxy.url, "alpha__toggle-simulated-logging", {}, request_id=2)
