"""Hostile input: every kind gets its refusal, and a well-behaved client alongside sees nothing.

One proxy with tight, explicit limits sits in front of two server-everything instances. A
background SDK session (GoodClient from test_malformed) calls echo in a loop for the whole
module while the tests below send request-smuggling variants, oversized heads and bodies,
deeply nested JSON, garbage, truncated chunked bodies, a slowloris head, invalid UTF-8 and huge
ids. The last test checks the background client saw no error and that the proxy's resident
memory stayed bounded. Connection and stream limits get proxies of their own (their floods
would otherwise be what the good client trips on). Tests run in file order.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request

import pytest

import harness
from harness import (
    ACCEPT_BOTH,
    raw_initialize,
    raw_request,
    request_head,
    rpc,
    socket_exchange,
    status_of,
)
from test_malformed import GoodClient

LIMITS = """
[proxy]
max_body_bytes = 1048576
max_header_bytes = 8192
header_read_timeout = "2s"

[limits]
max_headers = 32
max_json_depth = 64
request_timeout = "3s"
"""


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hostile():
    started = []
    try:
        alpha = harness.start_everything_http()
        started.append(alpha)
        beta = harness.start_everything_http()
        started.append(beta)
        proxy = harness.start_proxy(LIMITS + harness.servers_toml([("alpha", alpha.url), ("beta", beta.url)]),
                                    shards=2)
        started.append(proxy)
        good = GoodClient(proxy.url)
        good.start()
        # Warm up before the baseline so the first allocations of each shard are not counted.
        time.sleep(1.0)
        state = {"proxy": proxy, "good": good, "rss_before": rss_kib(proxy.proc.pid)}
        yield state
        good.finish()
    finally:
        for p in reversed(started):
            p.kill()


@pytest.fixture(scope="module")
def sid(hostile):
    return raw_initialize(hostile["proxy"].url)


def post_head(url: str, extra: str, sid: str | None = None) -> bytes:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    lines = [f"POST /mcp HTTP/1.1", f"Host: {host_port}", f"Accept: {ACCEPT_BOTH}",
             "Content-Type: application/json"]
    if sid:
        lines.append(f"Mcp-Session-Id: {sid}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'

# (name, framing header lines, body, expected status). Each is sent on its own connection.
SMUGGLING = [
    ("cl-and-te", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", 400),
    ("te-and-cl", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n", 400),
    ("conflicting-cl", f"Content-Length: {len(PING)}\r\nContent-Length: 3\r\n", PING, 400),
    ("duplicate-cl", f"Content-Length: {len(PING)}\r\nContent-Length: {len(PING)}\r\n", PING, 400),
    ("cl-list", f"Content-Length: {len(PING)}, {len(PING)}\r\n", PING, 400),
    ("cl-plus-sign", f"Content-Length: +{len(PING)}\r\n", PING, 400),
    ("cl-hex", "Content-Length: 0x10\r\n", PING, 400),
    ("te-gzip", "Transfer-Encoding: gzip\r\n", b"", 400),
    ("te-chunked-gzip", "Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n", 400),
    ("te-twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n", 400),
    ("te-xchunked", "Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n", 400),
    ("te-obs-fold", "Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n", 400),
    ("space-before-colon", f"Content-Length : {len(PING)}\r\n", PING, 400),
    ("bad-chunk-size", "Transfer-Encoding: chunked\r\n", b"zz\r\n" + PING + b"\r\n0\r\n\r\n", 400),
    ("chunk-size-0x", "Transfer-Encoding: chunked\r\n", b"0x28\r\n" + PING + b"\r\n0\r\n\r\n", 400),
    ("chunk-size-overflow", "Transfer-Encoding: chunked\r\n", b"1" * 40 + b"\r\n", 400),
    ("chunk-no-crlf", "Transfer-Encoding: chunked\r\n", b"5\r\nabcdeXX0\r\n\r\n", 400),
    ("chunk-bare-lf", "Transfer-Encoding: chunked\r\n", b"5\nabcde\n0\n\n", 400),
]


@pytest.mark.parametrize("name,fields,body,status", SMUGGLING, ids=[c[0] for c in SMUGGLING])
def test_smuggling_is_refused(hostile, sid, name, fields, body, status):
    url = hostile["proxy"].url
    raw, closed = socket_exchange(url, post_head(url, fields, sid), body)
    assert status_of(raw) == status, raw[:300]
    assert b"Connection: close" in raw, "the connection must not be reused after a framing fault"
    # Nothing after the refusal: the bytes that followed were not read as a second request.
    assert raw.count(b"HTTP/1.1 ") == 1, raw


def test_te_in_http10_is_refused(hostile):
    url = hostile["proxy"].url
    raw, _ = socket_exchange(url, b"POST /mcp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", b"0\r\n\r\n")
    assert status_of(raw) == 400, raw[:300]


@pytest.mark.parametrize("name,head,status", [
    ("garbage", b"\x00\xff\x13\x37garbage\r\n\r\n", 400),
    ("no-host", b"GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n", 400),
    ("two-hosts", b"GET /mcp HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("nul-in-value", b"GET /mcp HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", 400),
    ("obs-fold", b"GET /mcp HTTP/1.1\r\nHost: a\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    ("bad-request-line", b"GET  /mcp  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_heads(hostile, name, head, status):
    raw, _ = socket_exchange(hostile["proxy"].url, head)
    assert status_of(raw) == status, raw[:300]


def test_oversized_header_is_431(hostile, sid):
    url = hostile["proxy"].url
    raw, _ = socket_exchange(url, post_head(url, "X-Big: " + "a" * 9000 + "\r\nContent-Length: 2\r\n", sid), b"{}")
    assert status_of(raw) == 431, raw[:300]
    assert b"too large" in raw


def test_too_many_headers_is_431(hostile, sid):
    url = hostile["proxy"].url
    many = "".join(f"X-H{i}: v\r\n" for i in range(40))
    raw, _ = socket_exchange(url, post_head(url, many + "Content-Length: 2\r\n", sid), b"{}")
    assert status_of(raw) == 431, raw[:300]


def test_oversized_bodies_are_413(hostile, sid):
    url = hostile["proxy"].url
    # Declared too large: refused before the body is read.
    raw, _ = socket_exchange(url, post_head(url, "Content-Length: 2000000\r\n", sid), b"{")
    assert status_of(raw) == 413, raw[:300]
    assert b"1048576" in raw, "the message names the limit"
    # Chunked, growing past the limit.
    chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    raw, _ = socket_exchange(url, post_head(url, "Transfer-Encoding: chunked\r\n", sid), chunk * 20)
    assert status_of(raw) == 413, raw[:300]


def test_deep_json_is_refused_before_parsing(hostile, sid):
    url = hostile["proxy"].url
    for body in (b"[" * 200_000, b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b'{"a":' * 100 + b"1" + b"}" * 101):
        r = raw_request(url, body=body, session=sid)
        assert r.status == 400, (r.status, r.body[:300])
        err = r.messages[0]["error"]
        assert err["code"] == -32600 and "nested deeper than 64" in err["message"], err
    # Within the limit it is served.
    ok = raw_request(url, body=rpc("ping", {"_meta": {"a": [[[[1]]]]}}, request_id=5), session=sid)
    assert ok.status == 200 and ok.response_for(5) == {"jsonrpc": "2.0", "id": 5, "result": {}}, ok.body[:300]


def test_invalid_utf8_is_a_parse_error(hostile, sid):
    r = raw_request(hostile["proxy"].url, body=b'{"jsonrpc":"2.0","id":1,"method":"pi\xff\xfeng"}', session=sid)
    assert r.status == 400, (r.status, r.body[:300])
    assert r.messages[0]["error"]["code"] == -32700


def test_huge_ids(hostile, sid):
    url = hostile["proxy"].url
    big = "i" * 500_000
    r = raw_request(url, body=rpc("ping", request_id=big), session=sid)
    assert r.status == 200 and r.response_for(big) is not None, (r.status, r.body[:200])
    # An integer id beyond 64 bits is a number the parser refuses: a parse error, not a crash.
    r = raw_request(url, body=b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}', session=sid)
    assert r.status == 400, (r.status, r.body[:300])
    assert r.messages[0]["error"]["code"] == -32700


def test_truncated_chunked_body_is_dropped(hostile, sid):
    url = hostile["proxy"].url
    raw, closed = socket_exchange(url, post_head(url, "Transfer-Encoding: chunked\r\n", sid),
                                  b"28\r\n" + PING[:10], half_close=True)
    assert closed, "a truncated body must not hold the connection"
    assert status_of(raw) in (None, 400, 408), raw[:300]


def test_slowloris_head_is_cut_off(hostile):
    """A client trickling header bytes gets 408 and is closed long before it would finish."""
    url = hostile["proxy"].url
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    received = bytearray()
    sent = 0
    try:
        sock.sendall(f"POST /mcp HTTP/1.1\r\nHost: {host_port}\r\n".encode())
        trickle = b"X-Slow: " + b"a" * 200 + b"\r\n"
        for i in range(len(trickle) * 5):  # would take ~100 s at this pace
            try:
                sock.sendall(trickle[i % len(trickle):i % len(trickle) + 1])
                sent += 1
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received.extend(chunk)
            except socket.timeout:
                pass
            except OSError:  # reset after the close; what arrived before it is what counts
                break
    finally:
        sock.close()
    assert status_of(bytes(received)) == 408, bytes(received[:300])
    assert sent < 1000, "the slowloris client was never cut off"


def test_stalled_body_is_408(hostile, sid):
    url = hostile["proxy"].url
    raw, _ = socket_exchange(url, post_head(url, "Content-Length: 100\r\n", sid), b'{"jsonrpc":', hold=8.0)
    assert status_of(raw) == 408, raw[:300]


def test_streams_per_session_limit():
    upstream = harness.start_everything_http()
    proxy = None
    try:
        proxy = harness.start_proxy('[limits]\nmax_streams_per_session = 2\n\n'
                                    + harness.servers_toml([("alpha", upstream.url)]), shards=1)
        sid = raw_initialize(proxy.url)
        call = rpc("tools/call", {"name": "alpha__trigger-long-running-operation",
                                  "arguments": {"duration": 4, "steps": 2},
                                  "_meta": {"progressToken": "p"}}, request_id=9)
        results: list = []
        slow = [threading.Thread(target=lambda: results.append(raw_request(proxy.url, body=call, session=sid,
                                                                            timeout=20)))
                for _ in range(2)]
        for t in slow:
            t.start()
        time.sleep(1.0)
        refused = raw_request(proxy.url, body=rpc("ping", request_id=3), session=sid)
        assert refused.status == 429, (refused.status, refused.body[:300])
        assert "max_streams_per_session" in refused.messages[0]["error"]["message"]
        for t in slow:
            t.join(30)
        assert [r.status for r in results] == [200, 200]
        # Slots come back when the streams end.
        again = raw_request(proxy.url, body=rpc("ping", request_id=4), session=sid)
        assert again.status == 200, (again.status, again.body[:300])
    finally:
        if proxy:
            proxy.kill()
        upstream.kill()


def get_once_admitted(proxy, timeout: float = 10.0) -> bytes:
    """A sessionless GET, repeated while the proxy refuses the connection (503) and `timeout`
    allows: the raw answer of the first attempt it lets in, or the last refusal."""
    deadline = time.monotonic() + timeout
    while True:
        raw, _ = socket_exchange(proxy.url, request_head(proxy.url, "GET", {"Accept": "text/event-stream"}))
        if status_of(raw) != 503 or time.monotonic() > deadline:
            return raw
        time.sleep(0.2)

def test_connection_limit_is_503():
    upstream = harness.start_everything_http()
    proxy = None
    idle: list[socket.socket] = []
    try:
        proxy = harness.start_proxy('[limits]\nmax_connections = 4\n\n'
                                    + harness.servers_toml([("alpha", upstream.url)]), shards=1)
        for _ in range(4):
            idle.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=10))
        time.sleep(0.3)
        raw, closed = socket_exchange(proxy.url, request_head(proxy.url, "GET", {"Accept": "text/event-stream"}))
        assert status_of(raw) == 503, raw[:300]
        assert b"max_connections" in raw and closed
        for s in idle:
            s.close()
        idle.clear()
        raw = get_once_admitted(proxy)
        assert status_of(raw) == 400, raw[:300]  # served again: a GET without a session is 400
    finally:
        for s in idle:
            s.close()
        if proxy:
            proxy.kill()
        upstream.kill()


def open_connections(proxy) -> float:
    """Client connections the proxy holds, from its `mcp_proxy_connections` gauge."""
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mcp_proxy_connections{"))


def test_limits_follow_a_reload():
    """An operator raises max_connections and lowers max_json_depth in the file and sends SIGHUP:
    the next connection and the next message are judged by the new bounds, without a restart,
    and the session opened before the reload is kept."""
    upstream = harness.start_everything_http()
    proxy = None
    idle: list[socket.socket] = []
    nested = (b'{"jsonrpc":"2.0","id":7,"method":"ping","params":{"_meta":'
              + b'{"a":' * 20 + b"1" + b"}" * 21 + b"}")
    try:
        servers = harness.servers_toml([("alpha", upstream.url)])
        proxy = harness.start_proxy("[limits]\nmax_connections = 2\n\n" + servers, shards=1)
        sid = raw_initialize(proxy.url)
        r = raw_request(proxy.url, body=nested, session=sid)
        assert r.status == 200 and r.response_for(7) == {"jsonrpc": "2.0", "id": 7, "result": {}}, r.body[:300]
        # The connections of those requests must be gone before the two idle ones take the slots.
        deadline = time.monotonic() + 10
        while open_connections(proxy) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(2):
            idle.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=10))
        time.sleep(0.3)
        raw, _ = socket_exchange(proxy.url, request_head(proxy.url, "GET", {"Accept": "text/event-stream"}))
        assert status_of(raw) == 503, raw[:300]

        proxy.config_path.write_text("[limits]\nmax_connections = 8\nmax_json_depth = 16\n\n" + servers)
        proxy.proc.send_signal(signal.SIGHUP)
        raw = get_once_admitted(proxy)
        assert status_of(raw) == 400, raw[:300]  # let in: a GET without a session is 400
        r = raw_request(proxy.url, body=nested, session=sid)
        assert r.status == 400, (r.status, r.body[:300])
        err = r.messages[0]["error"]
        assert err["code"] == -32600 and "nested deeper than 16" in err["message"], err
        ok = raw_request(proxy.url, body=rpc("ping", request_id=8), session=sid)
        assert ok.status == 200 and ok.response_for(8) == {"jsonrpc": "2.0", "id": 8, "result": {}}, ok.body[:300]
    finally:
        for s in idle:
            s.close()
        if proxy:
            proxy.kill()
        upstream.kill()


def test_good_client_unharmed_and_memory_bounded(hostile):
    good: GoodClient = hostile["good"]
    calls_before = good.calls
    time.sleep(1.0)
    assert good.calls > calls_before, "the background client stopped making progress"
    assert not good.errors, good.errors[:5]
    after = rss_kib(hostile["proxy"].proc.pid)
    before = hostile["rss_before"]
    print(f"proxy RSS before the hostile inputs: {before} KiB, after: {after} KiB")
    # Every oversized body above was refused or bounded at 1 MiB; nothing may accumulate.
    assert after < before + 64 * 1024, f"RSS grew from {before} KiB to {after} KiB"
