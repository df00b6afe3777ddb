"""A fixed port already in use is refused; `--takeover` shares it for a zero-downtime restart.

Every shard listens with SO_REUSEPORT, so without a check a second proxy on the same fixed
address would silently split new connections with the first. These tests start proxies on
fixed ports (picked by binding port 0 and closing it; the tiny race is tolerated) in front of a
real server-everything, and check what an operator sees: the clash refused with a message
naming the address and `--takeover`, the first proxy unharmed, and a takeover that keeps
serving new clients after the old proxy is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile

import pytest

import harness

READY = "mcp-proxy ready: "


@pytest.fixture
def started():
    """Processes a test starts; every one is killed at teardown, whatever the outcome."""
    children: list = []
    try:
        yield children
    finally:
        for c in reversed(children):
            c.kill()


def write_config(upstream_url: str, session_key: str | None = None) -> str:
    fd, path = tempfile.mkstemp(prefix="takeover-", suffix=".toml", dir=harness._LOG_DIR)
    with os.fdopen(fd, "w") as f:
        if session_key:
            f.write(f'[proxy]\nsession_key = "{session_key}"\n\n')
        f.write(harness.servers_toml([("alpha", upstream_url)]))
    return path


def spawn_proxy(started: list, config: str, listen: str, admin: str,
                extra: list[str] | None = None) -> harness.Child:
    argv = [harness.PROXY_BIN, "--config", config, "--listen", listen, "--admin-listen", admin,
            "--shards", "2", *(extra or [])]
    child = harness.spawn("proxy", argv, env={"RUST_LOG": os.environ.get("RUST_LOG", "info")},
                          stdout=subprocess.PIPE)
    started.append(child)
    return child


def start_ready(started: list, config: str, listen: str, admin: str,
                extra: list[str] | None = None) -> str:
    """Start a proxy and wait for its ready line; returns its MCP URL."""
    child = spawn_proxy(started, config, listen, admin, extra)
    url, _admin = harness._read_ready_line(child, 20.0)
    return url


def refused(started: list, config: str, listen: str, admin: str) -> tuple[int, str, str]:
    """Start a proxy expected to refuse to start: its exit status, stdout and stderr."""
    child = spawn_proxy(started, config, listen, admin)
    try:
        status = child.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"the second proxy kept running on a port in use:\n{child.stderr_tail()}")
    out = child.proc.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
    return status, out, child.stderr_path.read_text(errors="replace")


def serves(url: str) -> list[str]:
    """A fresh client session (initialize, then tools/list); the tool names it was given."""
    sid = harness.raw_initialize(url)
    req = harness.rpc("tools/list", {})
    r = harness.raw_request(url, body=req, session=sid)
    assert r.status == 200, f"tools/list: HTTP {r.status} {r.body[:300]!r}"
    answer = r.response_for(req["id"])
    assert answer is not None and "result" in answer, f"tools/list answer: {r.messages}"
    return [t["name"] for t in answer["result"]["tools"]]


def test_a_second_proxy_on_the_same_listen_port_is_refused(spawner, started):
    upstream = spawner.everything()
    config = write_config(upstream.url)
    port = harness.free_port()
    addr = f"127.0.0.1:{port}"
    url = start_ready(started, config, addr, "127.0.0.1:0")
    assert "alpha__echo" in serves(url)

    status, out, err = refused(started, config, addr, "127.0.0.1:0")

    assert status != 0, err
    assert READY not in out, f"the refused proxy printed its ready line:\n{out}"
    assert f"{addr} is already in use" in err, err
    assert "--takeover" in err and "--listen" in err, err
    # The first proxy keeps every new connection, and still serves.
    for _ in range(4):
        assert "alpha__echo" in serves(url)


def test_a_second_proxy_on_the_same_admin_port_is_refused(spawner, started):
    upstream = spawner.everything()
    config = write_config(upstream.url)
    admin = f"127.0.0.1:{harness.free_port()}"
    url = start_ready(started, config, "127.0.0.1:0", admin)

    status, out, err = refused(started, config, "127.0.0.1:0", admin)

    assert status != 0, err
    assert READY not in out, out
    assert f"{admin} is already in use" in err, err
    assert "--takeover" in err and "--admin-listen" in err, err
    assert "alpha__echo" in serves(url)
    health = harness.raw_request(f"http://{admin}/healthz", method="GET")
    assert health.status == 200, health.body[:200]


def test_takeover_serves_new_clients_after_the_old_proxy_stops(spawner, started):
    upstream = spawner.everything()
    # One session key for both, as the restart procedure says: while both listen, a session
    # opened on one process may send its next request to the other.
    config = write_config(upstream.url, session_key=os.urandom(32).hex())
    addr = f"127.0.0.1:{harness.free_port()}"
    admin = f"127.0.0.1:{harness.free_port()}"
    url = start_ready(started, config, addr, admin)
    old = started[-1]

    new_url = start_ready(started, config, addr, admin, ["--takeover"])
    assert new_url == url
    new = started[-1]
    # Both processes listen now; clients are served whichever one the kernel picks for each
    # connection (initialize and tools/list each open one).
    for _ in range(4):
        assert "alpha__echo" in serves(url)

    os.kill(old.proc.pid, signal.SIGTERM)
    assert old.proc.wait(timeout=30) == 0, old.stderr_tail()

    # Only the new proxy is left: every fresh session is its, and none meets a refused or reset
    # connection.
    for _ in range(8):
        assert "alpha__echo" in serves(url)
    assert new.proc.poll() is None, new.stderr_tail()
    health = harness.raw_request(f"http://{admin}/healthz", method="GET")
    assert health.status == 200, health.body[:200]


def test_takeover_is_refused_with_stdio():
    done = subprocess.run([str(harness.PROXY_BIN), "--stdio", "--takeover"], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    assert done.returncode != 0
    assert b"--takeover" in done.stderr and b"--stdio" in done.stderr, done.stderr


def test_help_documents_takeover():
    done = subprocess.run([str(harness.PROXY_BIN), "--help"], capture_output=True, timeout=30)
    assert done.returncode == 0
    assert b"--takeover" in done.stdout and b"zero-downtime" in done.stdout, done.stdout
