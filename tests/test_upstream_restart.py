"""An upstream restarts behind an open client session; the client does not notice.

server-everything forgets every session when it restarts (and answers an unknown session id with
400, not 404), so the proxy has to open a new upstream session on its own.
"""

from __future__ import annotations

import json
import socket
import time
import warnings

import anyio
import mcp_types as types

from harness import raw_request, sdk_session, servers_toml, text_of


def test_session_survives_upstream_restart(spawner):
    alpha = spawner.everything()
    beta = spawner.everything()
    proxy = spawner.proxy([("alpha", alpha.url), ("beta", beta.url)], shards=2)

    async def go():
        async with sdk_session(proxy.url) as s:
            before = await s.call_tool("alpha__echo", {"message": "before restart"})

            await anyio.to_thread.run_sync(alpha.kill)
            restarted = await anyio.to_thread.run_sync(spawner.everything, alpha.port)

            after = await s.call_tool("alpha__echo", {"message": "after restart"})
            total = await s.call_tool("alpha__get-sum", {"a": 2, "b": 3})
            other = await s.call_tool("beta__echo", {"message": "beta untouched"})
            return before, after, total, other, restarted

    before, after, total, other, restarted = anyio.run(go)
    assert restarted.port == alpha.port and restarted.child.proc.pid != alpha.child.proc.pid
    assert text_of(before) == "Echo: before restart"
    assert not after.is_error and text_of(after) == "Echo: after restart"
    assert text_of(total) == "The sum of 2 and 3 is 5."
    assert text_of(other) == "Echo: beta untouched"


# ---------------------------------------------------------------------------------------------
# Resource subscriptions across an upstream restart
#
# server-everything forgets a session's subscriptions with the session, and sends updates only to
# a session that switched them on with its toggle-subscriber-updates tool (off in a new session).
# So after the restart the client switches them on again (one of its own calls, which must keep
# working) but never subscribes again: any update it gets then comes from the subscription the
# proxy renewed in the new upstream session.

ARCH = "demo://resource/static/document/architecture.md"
ALPHA_ARCH = f"alpha+{ARCH}"
TOGGLE = "alpha__toggle-subscriber-updates"
RENEWED = "renewed 1 of 1 resource subscriptions in a new session"


def restart(spawner, upstream):
    """Kill `upstream` and start server-everything again on its port: it knows no session."""
    upstream.kill()
    again = spawner.everything(upstream.port)
    assert again.port == upstream.port and again.child.proc.pid != upstream.child.proc.pid
    return again


def test_resource_subscription_survives_upstream_restart(spawner):
    """A stateful client (the Python SDK) subscribed through the proxy keeps getting
    resources/updated after its upstream restarts: the proxy re-opens the upstream session on its
    own (the client sends nothing) and subscribes again."""
    from test_stateless import wait_for_log

    alpha = spawner.everything()
    proxy = spawner.proxy([("alpha", alpha.url)], shards=2)
    updates: list[str] = []

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))

    async def updates_reach(count: int, seconds: float) -> bool:
        with anyio.move_on_after(seconds):
            while len(updates) < count:
                await anyio.sleep(0.1)
        return len(updates) >= count

    async def go():
        async with sdk_session(proxy.url, message_handler=on_message) as s:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # subscribe is deprecated for 2026-era servers only
                await s.subscribe_resource(ALPHA_ARCH)
            assert "Started" in text_of(await s.call_tool(TOGGLE, {}))
            assert await updates_reach(1, 20), "no resources/updated before the restart"

            await anyio.to_thread.run_sync(restart, spawner, alpha)
            # Nothing from the client: the proxy finds the session lost on its GET stream.
            await anyio.to_thread.run_sync(wait_for_log, proxy, RENEWED, 60.0)

            before = len(updates)
            toggled = await s.call_tool(TOGGLE, {})
            echoed = await s.call_tool("alpha__echo", {"message": "still here"})
            renewed = await updates_reach(before + 1, 30)
            await s.call_tool(TOGGLE, {})
            return toggled, echoed, renewed, before

    toggled, echoed, renewed, before = anyio.run(go)
    assert not toggled.is_error and "Started" in text_of(toggled), toggled
    assert text_of(echoed) == "Echo: still here"
    assert renewed, (f"no resources/updated within 30 s after the restart "
                     f"({before} before it): the subscription was not renewed upstream")
    assert set(updates) == {ALPHA_ARCH}, updates


def test_listen_subscription_survives_upstream_restart(spawner):
    """The same for a 2026-07-28 client's subscriptions/listen on a stateful upstream: the
    subscription the proxy holds through the client's bridge session is renewed, and updates keep
    arriving on the same listen stream. One shard, so the client's calls and its listen stream
    share a bridge session (see test_stateless)."""
    from test_relay import SseStream
    from test_stateless import modern_body, modern_headers, next_message, wait_for_log

    alpha = spawner.everything()
    proxy = spawner.proxy(servers_toml([("alpha", alpha.url)]), shards=1)

    def toggle() -> str:
        r = raw_request(proxy.url, body=modern_body("tools/call", {"name": TOGGLE, "arguments": {}}),
                        headers=modern_headers("tools/call", TOGGLE))
        return r.messages[0]["result"]["content"][0]["text"]

    def next_update(stream, seconds: float) -> dict:
        # The deadline is checked per line: the proxy's keep-alive comments would otherwise
        # keep a socket timeout from ever firing.
        deadline = time.monotonic() + seconds
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            stream.conn.sock.settimeout(left)
            try:
                line = stream.resp.readline()
            except (TimeoutError, socket.timeout):
                break
            assert line, "the listen stream ended"
            text = line.decode(errors="replace").strip()
            if not text.startswith("data:"):
                continue
            message = json.loads(text[5:])
            if message.get("method") == "notifications/resources/updated":
                return message
            seen.append(message)
        raise AssertionError(f"no resources/updated on the listen stream within {seconds} s; "
                             f"got {seen}")

    body = modern_body("subscriptions/listen",
                       {"notifications": {"resourceSubscriptions": [ALPHA_ARCH]}}, request_id="keep")
    # Generous socket timeout: the next update may wait for the upstream's restart.
    stream = SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=60)
    try:
        ack = next_message(stream)
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [ALPHA_ARCH]}, ack
        assert "Started" in toggle()
        assert next_update(stream, 20)["params"]["uri"] == ALPHA_ARCH

        restart(spawner, alpha)
        wait_for_log(proxy, RENEWED, 60.0)
        assert "Started" in toggle()
        update = next_update(stream, 30)
        assert update["params"]["uri"] == ALPHA_ARCH
        assert update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "keep"
        toggle()
    finally:
        stream.abort()


def test_listen_on_a_stateless_upstream_is_reopened_after_it_restarts(spawner):
    """A 2026-07-28 upstream (the SDK's MCPServer) watched through its own subscriptions/listen
    restarts: the proxy opens that upstream stream again while the client's listen stream is open,
    and the client's stream carries updates again without the client doing anything."""
    import sys

    import harness
    from test_relay import SseStream
    from test_stateless import WATCHED, modern_body, modern_headers, next_message

    port = harness.free_port()

    def start_watched():
        child = harness.spawn("watched", [sys.executable, str(WATCHED), str(port)])
        spawner.started.append(child)
        harness.wait_for_port(port, child)
        return child

    watched = start_watched()
    proxy = spawner.proxy(servers_toml([("watched", f"http://127.0.0.1:{port}/mcp")]), shards=2)

    def call(tool: str, arguments: dict) -> str | None:
        name = f"watched__{tool}"
        r = raw_request(proxy.url, body=modern_body("tools/call", {"name": name, "arguments": arguments}),
                        headers=modern_headers("tools/call", name))
        result = r.messages[0].get("result") if r.messages else None
        return result["content"][0]["text"] if result else None

    uri = "watched+watched://doc"
    body = modern_body("subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}},
                       request_id="w")
    stream = SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=30)
    try:
        assert next_message(stream)["params"]["notifications"] == {"resourceSubscriptions": [uri]}
        assert call("touch", {"uri": "watched://doc"}) == "touched watched://doc"
        assert next_message(stream)["params"]["uri"] == uri

        watched.kill()
        start_watched()
        deadline = time.monotonic() + 60
        # Two streams once both are back: discovery's own (list changes) and the client's.
        while int(call("listening", {})) < 2:
            assert time.monotonic() < deadline, "the proxy did not listen to the restarted upstream again"
            time.sleep(0.2)
        assert call("touch", {"uri": "watched://doc"}) == "touched watched://doc"
        update = next_message(stream)
        assert update["method"] == "notifications/resources/updated", update
        assert update["params"]["uri"] == uri
        assert update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "w"
    finally:
        stream.abort()
