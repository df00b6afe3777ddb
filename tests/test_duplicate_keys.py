"""A JSON object that names a member twice is refused, never forwarded with a second meaning.

JSON leaves a repeated member name's meaning open: the proxy's parser sees the first, while the
servers behind it (JavaScript's `JSON.parse`, Python's `json`) keep the last. A client allowed only
`secret__echo` that sent `"params":{"name":"secret__echo","name":"get-env"}` would pass the
policy with the first name and have its server run the second. So every message with a repeated
name, at any depth and however the name is escaped (`"na\\u006de"` is `"name"`), is answered
with -32600 Invalid Request and nothing of it reaches a server:

- over Streamable HTTP with `[auth]` (a client whose policy allows only `secret__echo`), for a
  second `name`, a second `params`, an escaped `name`, repeated names inside `arguments` (plain
  and escaped) and a second `method`;
- for 2026-07-28 requests (`Mcp-Name` header, `_meta` envelope), with the same policy;
- on `mcp-proxy --stdio`;
- and the other way: an upstream answer with a repeated name is not relayed; the client gets
  -32001 (the server's answer could not be relayed) instead.

Real peers: server-everything over Streamable HTTP is the `secret` server (its `get-env` tool is
the hidden one, its `echo` the allowed one). Between the proxy and it sits a TCP relay that keeps
every byte the proxy sends, so a test sees what reached the server; a control call through the
same relay shows it does see traffic. The answering upstream of the last test is a small HTTP
server in this file that puts a repeated name in its `tools/call` result.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import queue
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import harness
from harness import PROXY_BIN, initialize_params, raw_request, rpc

API_KEY = "echo-only-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODERN = "2026-07-28"
INVALID_REQUEST = -32600
UPSTREAM_PROTOCOL = -32001


class Relay:
    """A TCP relay to `target_port` that records every byte sent towards the target."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sent = bytearray()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def seen(self, marker: str) -> bool:
        with self.lock:
            return marker.encode() in self.sent

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                s.close()


def auth_config(url: str) -> str:
    return f"""
[auth]
enabled = true

[[auth.clients]]
name = "echo-only"
api_keys = ["{API_KEY}"]
servers = ["secret"]
tools = ["secret__echo"]

[[servers]]
name = "secret"
url = "{url}"
timeout = "30s"
"""


@pytest.fixture(scope="module")
def secret():
    """server-everything as `secret`, behind the recording relay, behind a proxy with [auth]."""
    started: list = []
    relay = None
    try:
        everything = harness.start_everything_http()
        started.append(everything)
        relay = Relay(everything.port)
        proxy = harness.start_proxy(auth_config(relay.url), shards=2)
        started.append(proxy)
        yield proxy, relay
    finally:
        for p in reversed(started):
            p.kill()
        if relay is not None:
            relay.close()


_ids = itertools.count(1)

# Bodies of tools/call requests with a name repeated somewhere; MARK is replaced by a string
# unique to the request, so the relay tells whether any of it reached the server.
REPEATED = {
    "second name": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                   '"arguments":{"message":"MARK"},"name":"get-env"}}',
    "second params": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                     '"arguments":{"message":"MARK"}},"params":{"name":"get-env","arguments":{}}}',
    "escaped name": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                    '"arguments":{"message":"MARK"},"na\\u006de":"get-env"}}',
    "inside arguments": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                        '"arguments":{"message":"MARK","message":"get-env"}}}',
    "escaped inside arguments": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":'
                                '{"name":"secret__echo","arguments":{"message":"MARK","mess\\u0061ge":"x"}}}',
    "second method": '{"jsonrpc":"2.0","id":ID,"method":"tools/list","params":{"name":"get-env",'
                     '"arguments":{"message":"MARK"}},"method":"tools/call"}',
}


def repeated(case: str) -> tuple[int, str, str]:
    """(id, marker, body) of one case."""
    request_id = next(_ids)
    marker = f"mark-{uuid.uuid4().hex[:12]}"
    return request_id, marker, REPEATED[case].replace("ID", str(request_id)).replace("MARK", marker)


def assert_refused(message: dict, request_id) -> None:
    assert "error" in message, f"not refused: {json.dumps(message)[:400]}"
    assert message["error"]["code"] == INVALID_REQUEST, message
    assert "appears twice" in message["error"]["message"], message
    assert message.get("id") in (request_id, None), message


def echo_reaches_the_server(proxy_url: str, relay: Relay, session: str | None = None,
                            headers: dict | None = None, body: dict | None = None) -> None:
    """The control: an allowed call goes through the relay and is answered."""
    marker = f"ok-{uuid.uuid4().hex[:12]}"
    req = body or rpc("tools/call", {"name": "secret__echo", "arguments": {"message": marker}})
    if body is not None:
        req["params"]["arguments"]["message"] = marker
    r = raw_request(proxy_url, body=req, session=session, headers=headers)
    assert r.status == 200, r.body[:300]
    assert f"Echo: {marker}" in json.dumps(r.messages), r.messages
    assert relay.seen(marker)


def open_session(url: str) -> str:
    r = raw_request(url, body=rpc("initialize", initialize_params()), headers=AUTH)
    assert r.status == 200, r.body[:300]
    sid = r.header("mcp-session-id")
    assert sid
    n = raw_request(url, body={"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid,
                    headers=AUTH)
    assert n.status in (200, 202)
    return sid


@pytest.mark.parametrize("case", list(REPEATED))
def test_a_repeated_name_is_refused_and_nothing_reaches_the_server(secret, case):
    proxy, relay = secret
    sid = open_session(proxy.url)
    request_id, marker, body = repeated(case)
    r = raw_request(proxy.url, body=body, session=sid, headers=AUTH)
    assert r.messages, f"HTTP {r.status}: {r.body[:300]!r}"
    assert_refused(r.messages[0], request_id)
    assert r.status == 400
    assert "get-env" not in json.dumps(r.messages)
    assert not relay.seen(marker), "the refused request reached the server"
    assert not relay.seen("get-env"), "the hidden tool was asked for"
    echo_reaches_the_server(proxy.url, relay, session=sid, headers=AUTH)


def modern_headers(name: str | None) -> dict[str, str]:
    h = {**AUTH, "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN,
         "Mcp-Method": "tools/call"}
    if name is not None:
        h["Mcp-Name"] = name
    return h


META = ('"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        '"io.modelcontextprotocol/clientCapabilities":{},'
        '"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}')

REPEATED_MODERN = {
    "second name": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                   '"arguments":{"message":"MARK"},"name":"get-env",META}}',
    "escaped name": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                    '"arguments":{"message":"MARK"},"n\\u0061me":"get-env",META}}',
    "inside arguments": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                        '"arguments":{"message":"MARK","message":"get-env"},META}}',
    "inside _meta": '{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"secret__echo",'
                    '"arguments":{"message":"MARK"},"_meta":{"io.modelcontextprotocol/protocolVersion":'
                    '"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},'
                    '"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},'
                    '"io.modelcontextprotocol/protocolVersion":"2025-06-18"}}}',
}


@pytest.mark.parametrize("case", list(REPEATED_MODERN))
def test_a_repeated_name_is_refused_in_a_2026_07_28_request(secret, case):
    proxy, relay = secret
    request_id = next(_ids)
    marker = f"mark-{uuid.uuid4().hex[:12]}"
    body = (REPEATED_MODERN[case].replace("META", META).replace("ID", str(request_id))
            .replace("MARK", marker))
    r = raw_request(proxy.url, body=body, headers=modern_headers("secret__echo"))
    assert r.messages, f"HTTP {r.status}: {r.body[:300]!r}"
    assert_refused(r.messages[0], request_id)
    assert "get-env" not in json.dumps(r.messages)
    assert not relay.seen(marker), "the refused request reached the server"
    assert not relay.seen("get-env"), "the hidden tool was asked for"
    control = json.loads(REPEATED_MODERN["second name"].replace(',"name":"get-env"', "")
                         .replace("META", META).replace("ID", str(next(_ids))))
    echo_reaches_the_server(proxy.url, relay, headers=modern_headers("secret__echo"), body=control)


@pytest.fixture
def stdio_proxy(tmp_path):
    """`mcp-proxy --stdio` in front of the relayed `secret` server; yields (send, receive, relay)."""
    everything = harness.start_everything_http()
    relay = Relay(everything.port)
    config = tmp_path / "stdio.toml"
    config.write_text(f'[[servers]]\nname = "secret"\nurl = "{relay.url}"\ntimeout = "30s"\n')
    stderr_path = tmp_path / "stdio-proxy.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([str(PROXY_BIN), "--stdio", "--config", str(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, "RUST_LOG": "info"}, start_new_session=True)
    child = harness.Child("stdio-proxy", proc, stderr_path)
    with harness._LIVE_LOCK:
        harness._LIVE.add(child)
    lines: queue.Queue = queue.Queue()

    def reader() -> None:
        try:
            for raw in proc.stdout:  # type: ignore[union-attr]
                lines.put(raw)
        except (ValueError, OSError):
            pass
        finally:
            lines.put(None)

    threading.Thread(target=reader, daemon=True).start()

    def send(text: str) -> None:
        proc.stdin.write(text.encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    def answer(request_id, timeout: float = 30.0) -> dict:
        while True:
            raw = lines.get(timeout=timeout)
            assert raw is not None, f"the stdio proxy ended:\n{child.stderr_tail()}"
            message = json.loads(raw)
            if message.get("id") in (request_id, None) and ("result" in message or "error" in message):
                return message

    try:
        yield send, answer, relay
    finally:
        child.kill()
        relay.close()
        everything.kill()


def test_a_repeated_name_is_refused_on_stdio(stdio_proxy):
    send, answer, relay = stdio_proxy
    send(json.dumps(rpc("initialize", initialize_params(), request_id="init")))
    assert "result" in answer("init")
    send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
    for case in ("second name", "escaped name", "inside arguments"):
        request_id, marker, body = repeated(case)
        send(body)
        assert_refused(answer(request_id), request_id)
        assert not relay.seen(marker), f"{case}: the refused request reached the server"
    marker = f"ok-{uuid.uuid4().hex[:12]}"
    send(json.dumps(rpc("tools/call", {"name": "secret__echo", "arguments": {"message": marker}},
                        request_id="ok")))
    assert f"Echo: {marker}" in json.dumps(answer("ok"))
    assert relay.seen(marker)


class RepeatingUpstream(http.server.BaseHTTPRequestHandler):
    """A minimal MCP server whose tools/call answer names `content` twice."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._send(405)

    def do_DELETE(self) -> None:  # noqa: N802
        self._send(200)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        msg = json.loads(self.rfile.read(length))
        if "id" not in msg:
            self._send(202)
            return
        rid = json.dumps(msg["id"])
        method = msg.get("method")
        if method == "initialize":
            result = json.dumps({"protocolVersion": msg["params"]["protocolVersion"],
                                 "capabilities": {"tools": {}},
                                 "serverInfo": {"name": "repeating", "version": "1"}})
        elif method == "tools/list":
            result = json.dumps({"tools": [{"name": "say", "inputSchema": {"type": "object"}}]})
        elif method == "tools/call":
            result = ('{"content":[{"type":"text","text":"what the proxy would see"}],'
                      '"content":[{"type":"text","text":"what the client would see"}]}')
        else:
            result = "{}"
        self._send(200, f'{{"jsonrpc":"2.0","id":{rid},"result":{result}}}'.encode())


def test_an_upstream_answer_with_a_repeated_name_is_not_relayed(spawner):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RepeatingUpstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/mcp"
        proxy = spawner.proxy(f'[[servers]]\nname = "rep"\nurl = "{url}"\ntimeout = "10s"\n', shards=1)
        sid = harness.raw_initialize(proxy.url)
        req = rpc("tools/call", {"name": "rep__say", "arguments": {}})
        r = raw_request(proxy.url, body=req, session=sid)
        answer = r.response_for(req["id"])
        assert answer is not None, r.body[:300]
        assert "what the client would see" not in json.dumps(answer), answer
        assert answer.get("error", {}).get("code") == UPSTREAM_PROTOCOL, answer
    finally:
        server.shutdown()
        server.server_close()
