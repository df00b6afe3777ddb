"""Deadlines of upstream answers, clients that leave mid-request, and the SIGTERM drain.

The upstream is tests/fixtures/fault_upstream.py, a stateful server whose tools misbehave on
purpose (a body shorter than its Content-Length, an SSE stream of keep-alive comments only,
progress every second, silence) and which records the `notifications/cancelled` it receives.

- A server's `timeout` bounds its whole answer: a stalled body or a stream of keep-alives gives
  the client a JSON-RPC error naming the server (well before 4x the timeout), the server is told
  `notifications/cancelled`, and progress notifications extend the wait up to 10x the timeout.
- Clients that close their connection while their call is in flight take the call with them:
  no socket of theirs stays open in the proxy, downstream or upstream, and the server is told to
  stop.
- On SIGTERM idle keep-alive connections are closed at once, a call in flight gets its answer
  with `Connection: close`, and the process exits as soon as that call is done.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import harness

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fault_upstream.py"
TIMEOUT_S = 3


def start_fault_upstream() -> harness.Upstream:
    port = harness.free_port()
    child = harness.spawn("fault-upstream", [sys.executable, FIXTURE, str(port)])
    try:
        harness.wait_for_port(port, child)
    except BaseException:
        child.kill()
        raise
    return harness.Upstream(child, port)


def upstream_log(upstream: harness.Upstream) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{upstream.port}/log", timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def fault(spawner):
    """The fault upstream as server `fault` (timeout 3 s) behind a proxy with two shards."""
    upstream = start_fault_upstream()
    spawner.started.append(upstream)
    proxy = spawner.proxy(harness.servers_toml({"fault": upstream.url}, timeout=f"{TIMEOUT_S}s"))
    return proxy, upstream


def timed_call(url: str, session: str, tool: str, arguments: dict | None = None,
               meta: dict | None = None) -> tuple[float, harness.RawResponse, dict | None]:
    params: dict = {"name": tool, "arguments": arguments or {}}
    if meta:
        params["_meta"] = meta
    req = harness.rpc("tools/call", params)
    started = time.monotonic()
    # The client's own limit is far past the bound asserted: a hang fails, it does not block.
    r = harness.raw_request(url, body=req, session=session, timeout=60)
    return time.monotonic() - started, r, r.response_for(req["id"])


def assert_timed_out(took: float, answer: dict | None) -> None:
    assert answer is not None and "error" in answer, f"expected an error, got {answer}"
    message = answer["error"]["message"]
    assert "fault" in message and "did not answer" in message, message
    # A correctness bound (the answer is not left hanging), not a speed claim.
    assert took < 4 * TIMEOUT_S, f"the error took {took:.1f}s with timeout {TIMEOUT_S}s"


def wait_cancelled(upstream: harness.Upstream, count: int, within: float = 10.0) -> list:
    deadline = time.monotonic() + within
    while True:
        cancelled = upstream_log(upstream)["cancelled"]
        if len(cancelled) >= count or time.monotonic() > deadline:
            return cancelled
        time.sleep(0.1)


def test_a_body_shorter_than_its_content_length_times_out(fault):
    proxy, upstream = fault
    session = harness.raw_initialize(proxy.url)
    took, r, answer = timed_call(proxy.url, session, "fault__short_body")
    assert r.status == 200
    assert_timed_out(took, answer)
    cancelled = wait_cancelled(upstream, 1)
    assert len(cancelled) == 1 and "requestId" in cancelled[0], cancelled


def test_a_stream_of_keep_alive_comments_times_out(fault):
    proxy, upstream = fault
    session = harness.raw_initialize(proxy.url)
    took, r, answer = timed_call(proxy.url, session, "fault__keepalive_stream")
    assert r.status == 200
    assert_timed_out(took, answer)
    assert len(wait_cancelled(upstream, 1)) == 1


def test_progress_extends_the_deadline(fault):
    proxy, _ = fault
    session = harness.raw_initialize(proxy.url)
    took, r, answer = timed_call(proxy.url, session, "fault__progress_stream",
                                 {"interval": 1, "seconds": 5}, meta={"progressToken": "t1"})
    assert answer is not None and "result" in answer, f"{r.status} {r.messages}"
    assert "done after" in harness.tool_text(answer["result"])
    progress = [m for m in r.messages if m.get("method") == "notifications/progress"]
    assert progress, "the progress notifications were relayed"


def test_progress_does_not_extend_past_ten_times_the_timeout(spawner):
    upstream = start_fault_upstream()
    spawner.started.append(upstream)
    proxy = spawner.proxy(harness.servers_toml({"fault": upstream.url}, timeout="1s"))
    session = harness.raw_initialize(proxy.url)
    took, r, answer = timed_call(proxy.url, session, "fault__progress_stream",
                                 {"interval": 0.5, "seconds": 20}, meta={"progressToken": "t2"})
    assert answer is not None and "error" in answer, f"{r.status} {r.messages}"
    assert "did not answer" in answer["error"]["message"]
    assert took < 15, f"the error took {took:.1f}s; progress may extend a 1s timeout to 10s"


# ---------------------------------------------------------------------------------------------
# Clients that leave


def proxy_sockets(pid: int, proxy_port: int, upstream_port: int) -> tuple[int, int]:
    """(downstream sockets in CLOSE-WAIT, upstream sockets ESTABLISHED) held by process `pid`."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    close_wait = established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], f[9]
            if inode not in inodes:
                continue
            lport, rport = int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)
            if lport == proxy_port and state == "08":
                close_wait += 1
            if rport == upstream_port and state == "01":
                established += 1
    return close_wait, established


def send_and_leave(url: str, session: str, tool: str, request_id: int) -> None:
    """Sends a tools/call on a new connection and closes it without reading the answer."""
    body = json.dumps(harness.rpc("tools/call", {"name": tool, "arguments": {}},
                                  request_id=request_id)).encode()
    head = harness.request_head(url, "POST", {
        "Content-Type": "application/json",
        "Accept": harness.ACCEPT_BOTH,
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": harness.PROTOCOL_VERSION,
        "Content-Length": str(len(body)),
    })
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head + body)
        time.sleep(0.5)


@pytest.mark.parametrize("tool", ["fault__stall", "fault__stall_stream"])
def test_clients_that_leave_take_their_calls_with_them(spawner, tool):
    upstream = start_fault_upstream()
    spawner.started.append(upstream)
    # A timeout far past the test: only the clients leaving may end these calls.
    proxy = spawner.proxy(harness.servers_toml({"fault": upstream.url}, timeout="120s"))
    session = harness.raw_initialize(proxy.url)
    threads = [threading.Thread(target=send_and_leave, args=(proxy.url, session, tool, 500 + i))
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while True:
        held = proxy_sockets(proxy.proc.pid, proxy.port, upstream.port)
        cancelled = upstream_log(upstream)["cancelled"]
        if (held == (0, 0) and len(cancelled) >= 20) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert held == (0, 0), f"(CLOSE-WAIT downstream, ESTABLISHED upstream) = {held}"
    assert len(cancelled) == 20, cancelled
    # The proxy still serves the session.
    r = harness.raw_request(proxy.url, body=harness.rpc("tools/list"), session=session)
    assert r.status == 200


# ---------------------------------------------------------------------------------------------
# SIGTERM


def keep_alive_connection(url: str) -> socket.socket:
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while not harness._complete_response(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def post_on(sock: socket.socket, url: str, session: str, msg: dict) -> None:
    body = json.dumps(msg).encode()
    head = harness.request_head(url, "POST", {
        "Content-Type": "application/json",
        "Accept": harness.ACCEPT_BOTH,
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": harness.PROTOCOL_VERSION,
        "Content-Length": str(len(body)),
    })
    sock.sendall(head + body)


def test_sigterm_closes_idle_connections_and_answers_the_rest_with_close(spawner):
    upstream = start_fault_upstream()
    spawner.started.append(upstream)
    proxy = spawner.proxy(harness.servers_toml({"fault": upstream.url}, timeout="30s"), shards=1)
    session = harness.raw_initialize(proxy.url)

    # An idle keep-alive connection: one request answered, then nothing.
    idle = keep_alive_connection(proxy.url)
    post_on(idle, proxy.url, session, harness.rpc("tools/list"))
    first = read_response(idle)
    assert harness.status_of(first) == 200 and b"connection: close" not in first.lower()

    # A call in flight: progress for 3 s, then the answer.
    busy = keep_alive_connection(proxy.url)
    call = harness.rpc("tools/call", {"name": "fault__progress_stream",
                                      "arguments": {"interval": 1, "seconds": 3}})
    post_on(busy, proxy.url, session, call)
    time.sleep(0.5)

    signalled = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)

    idle.settimeout(10)
    try:
        rest = idle.recv(1)
    except ConnectionResetError:
        rest = b""
    idle_closed_after = time.monotonic() - signalled
    assert rest == b"", f"the idle connection got {rest!r}"

    answer = read_response(busy)
    answered_after = time.monotonic() - signalled
    assert harness.status_of(answer) == 200, answer[:300]
    assert b"connection: close" in answer.lower(), answer[:300]
    assert b"done after" in answer, answer[-300:]
    # The idle one closed at once, long before the call in flight was answered.
    assert idle_closed_after < answered_after - 1, (idle_closed_after, answered_after)

    proxy.proc.wait(timeout=20)
    exited_after = time.monotonic() - signalled
    assert proxy.proc.returncode == 0
    assert exited_after < 8, f"exited {exited_after:.1f}s after SIGTERM (the drain cap is 10 s)"


def test_a_stdio_server_that_never_answers_times_out(spawner):
    fixture = Path(__file__).resolve().parent / "fixtures" / "silent_stdio.py"
    config = (f'[[servers]]\nname = "silent"\ncommand = "{sys.executable}"\n'
              f'args = ["{fixture}"]\ntimeout = "{TIMEOUT_S}s"\n')
    proxy = spawner.proxy(config)
    session = harness.raw_initialize(proxy.url)
    took, r, answer = timed_call(proxy.url, session, "silent__hang")
    assert answer is not None and "error" in answer, f"{r.status} {r.messages}"
    message = answer["error"]["message"]
    assert "silent" in message and "did not answer" in message, message
    assert took < 4 * TIMEOUT_S, f"the error took {took:.1f}s with timeout {TIMEOUT_S}s"
    deadline = time.monotonic() + 10
    while "cancelled {" not in proxy.stderr_tail(200) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cancelled {" in proxy.stderr_tail(200), "the child was told to stop"
