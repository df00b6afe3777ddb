"""Bad requests get the right refusal, and a well-behaved client alongside never notices.

A background SDK client calls echo in a loop for the whole module; each bad request below is sent
while it runs, and the last test checks the background client saw no error at all.
The tests in this module run in file order (pytest's default) and share one proxy.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from harness import (
    ACCEPT_BOTH,
    raw_call_tool,
    raw_initialize,
    raw_request,
    request_head,
    rpc,
    sdk_session,
    socket_exchange,
    status_of,
    text_of,
    tool_text,
)


class GoodClient:
    """An SDK session in its own thread calling alpha__echo / beta__echo until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.calls = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="good-client")

    def _run(self) -> None:
        try:
            anyio.run(self._loop)
        except BaseException as e:  # noqa: BLE001 - any failure is what we are counting
            self.errors.append(f"session failed: {e!r}")
        finally:
            self.ready.set()

    async def _loop(self) -> None:
        async with sdk_session(self.url) as s:
            self.ready.set()
            i = 0
            while not self.stop.is_set():
                server = "alpha" if i % 2 == 0 else "beta"
                want = f"Echo: good-{i}"
                try:
                    r = await s.call_tool(f"{server}__echo", {"message": f"good-{i}"}, read_timeout_seconds=20)
                    if r.is_error or text_of(r) != want:
                        self.errors.append(f"call {i}: {text_of(r)!r}")
                except Exception as e:  # noqa: BLE001
                    self.errors.append(f"call {i}: {e!r}")
                self.calls += 1
                i += 1
                await anyio.sleep(0.01)

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(30), "background client did not initialize"
        assert not self.errors, self.errors

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture(scope="module")
def good_client(proxy_ab):
    client = GoodClient(proxy_ab.url)
    client.start()
    try:
        yield client
    finally:
        client.finish()


@pytest.fixture(scope="module")
def sid(proxy_ab, good_client):
    """A raw-HTTP session for the requests below (started after the good client is running)."""
    return raw_initialize(proxy_ab.url)


def _error(resp, code: int) -> dict:
    errors = [m["error"] for m in resp.messages if "error" in m]
    assert errors, f"no JSON-RPC error in HTTP {resp.status} body {resp.body[:300]!r}"
    assert errors[0]["code"] == code, errors[0]
    return errors[0]


def test_invalid_json_is_parse_error(proxy_ab, sid):
    r = raw_request(proxy_ab.url, body='{"jsonrpc": "2.0", "id": 1, "method": ', session=sid)
    assert r.status == 400, (r.status, r.body[:300])
    _error(r, -32700)


def test_not_a_jsonrpc_request_is_invalid_request(proxy_ab, sid):
    r = raw_request(proxy_ab.url, body='{"foo": 1}', session=sid)
    assert r.status in (200, 400), (r.status, r.body[:300])
    _error(r, -32600)


def test_unknown_method(proxy_ab, sid):
    req = rpc("no/such-method", {})
    r = raw_request(proxy_ab.url, body=req, session=sid)
    assert r.status in (200, 400), (r.status, r.body[:300])
    err = _error(r, -32601)
    assert r.response_for(req["id"]) is not None, f"error does not carry id {req['id']}: {err}"


def test_unknown_tool_names_it(proxy_ab, sid):
    r, answer = raw_call_tool(proxy_ab.url, sid, "alpha__definitely-not-a-tool", {})
    assert answer is not None and "error" in answer, (r.status, r.body[:300])
    assert answer["error"]["code"] == -32602
    assert "alpha__definitely-not-a-tool" in answer["error"]["message"]


def test_missing_session_is_400(proxy_ab, good_client):
    r = raw_request(proxy_ab.url, body=rpc("tools/list"))
    assert r.status == 400, (r.status, r.body[:300])


def test_unknown_session_is_404(proxy_ab, good_client):
    r = raw_request(proxy_ab.url, body=rpc("tools/list"), session="no-such-session-4f9a2c")
    assert r.status == 404, (r.status, r.body[:300])


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream", "text/html", None])
def test_wrong_accept_is_406(proxy_ab, sid, accept):
    r = raw_request(proxy_ab.url, body=rpc("tools/list"), session=sid, accept=accept)
    assert r.status == 406, (accept, r.status, r.body[:300])


def test_foreign_origin_is_403(proxy_ab, sid):
    on_session = raw_request(proxy_ab.url, body=rpc("tools/list"), session=sid,
                             headers={"Origin": "http://evil.example"})
    assert on_session.status == 403, (on_session.status, on_session.body[:300])
    from harness import initialize_params

    on_init = raw_request(proxy_ab.url, body=rpc("initialize", initialize_params()),
                          headers={"Origin": "http://evil.example"})
    assert on_init.status == 403, (on_init.status, on_init.body[:300])
    assert not on_init.header("mcp-session-id"), "a refused initialize still issued a session"


def test_oversized_body_is_413(proxy_ab, sid):
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"message":"' \
        + b"x" * (5 * 1024 * 1024) + b'"}}}'
    head = request_head(proxy_ab.url, "POST", {
        "Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": "2025-11-25", "Content-Length": str(len(body)),
    })
    raw, _ = socket_exchange(proxy_ab.url, head, body)
    assert status_of(raw) == 413, raw[:300]


def test_truncated_body_half_close(proxy_ab, sid):
    head = request_head(proxy_ab.url, "POST", {
        "Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": "2025-11-25", "Content-Length": "1000",
    })
    raw, closed = socket_exchange(proxy_ab.url, head, b'{"jsonrpc":"2.0","id":7,"method":"tools/list"',
                                  half_close=True, timeout=15)
    if raw:
        assert status_of(raw) in (400, 408), raw[:300]
    else:
        assert closed, "the proxy neither answered nor closed a truncated, half-closed request in 15s"
    _assert_healthy(proxy_ab.url, sid)


def test_stalled_body_does_not_block_others(proxy_ab, sid):
    """A client that promises 1000 bytes and sends 40 ties up only its own connection."""
    head = request_head(proxy_ab.url, "POST", {
        "Content-Type": "application/json", "Accept": ACCEPT_BOTH, "Mcp-Session-Id": sid,
        "MCP-Protocol-Version": "2025-11-25", "Content-Length": "1000",
    })
    stalled: list[bytes] = []
    t = threading.Thread(target=lambda: stalled.append(
        socket_exchange(proxy_ab.url, head, b'{"jsonrpc":"2.0","id":8,"method":"tools/', hold=3.0)))
    t.start()
    time.sleep(0.3)
    for _ in range(6):  # new connections land on both shards
        _assert_healthy(proxy_ab.url, sid)
    t.join(10)
    assert stalled, "stalled connection thread did not finish"
    raw, _ = stalled[0]
    assert raw == b"" or status_of(raw) in (400, 408), raw[:300]


def test_put_is_405(proxy_ab, sid):
    r = raw_request(proxy_ab.url, method="PUT", body=rpc("tools/list"), session=sid)
    assert r.status == 405, (r.status, r.body[:300])


def test_unsupported_protocol_version_header_is_400(proxy_ab, sid):
    r = raw_request(proxy_ab.url, body=rpc("tools/list"), session=sid, protocol_version="1999-01-01")
    assert r.status == 400, (r.status, r.body[:300])


def test_stateless_discover_probe_is_answered(proxy_ab, good_client):
    """The Python SDK's mcp.Client probes 2026-07-28 `server/discover` first; the proxy speaks
    that era too (tests/test_stateless.py), so the probe gets a DiscoverResult naming both eras,
    while stateful clients keep being served alongside. Like every 2026-07-28 request it carries
    the `_meta` envelope (an empty one gets 400 -32602, which also sends the SDK to `initialize`)."""
    empty = rpc("server/discover", {"_meta": {}})
    r = raw_request(proxy_ab.url, body=empty, protocol_version=None,
                    headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"})
    assert r.status == 400, (r.status, r.body[:300])
    assert r.response_for(empty["id"])["error"]["code"] == -32602, r.body[:300]
    req = rpc("server/discover", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                            "io.modelcontextprotocol/clientCapabilities": {}}})
    r = raw_request(proxy_ab.url, body=req, protocol_version=None,
                    headers={"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"})
    assert r.status == 200, (r.status, r.body[:300])
    answer = r.response_for(req["id"])
    assert answer is not None and "result" in answer, r.body[:300]
    assert {"2026-07-28", "2025-11-25"} <= set(answer["result"]["supportedVersions"])


def test_good_client_saw_no_errors_and_proxy_still_answers(proxy_ab, good_client, sid):
    time.sleep(0.5)
    good_client.finish()
    assert not good_client.errors, good_client.errors[:10]
    assert good_client.calls >= 20, f"background client made only {good_client.calls} calls"
    _assert_healthy(proxy_ab.url, sid)

    async def fresh():
        async with sdk_session(proxy_ab.url) as s:
            return await s.call_tool("beta__get-sum", {"a": 5, "b": 6})

    assert text_of(anyio.run(fresh)) == "The sum of 5 and 6 is 11."


def _assert_healthy(url: str, sid: str) -> None:
    r, answer = raw_call_tool(url, sid, "alpha__echo", {"message": "healthy?"}, timeout=10)
    assert r.status == 200 and answer and tool_text(answer.get("result", {})) == "Echo: healthy?", \
        (r.status, r.body[:300])
