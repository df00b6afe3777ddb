"""Process and protocol helpers shared by the integration tests.

Environment: MCP_PROXY_BIN overrides the proxy binary (default target/release/mcp-proxy);
RUST_LOG is passed to it (default info).

What lives here:
- locating the repository, the proxy binary and the npm peers;
- starting child processes (the proxy, server-everything) in their own process group and
  killing them for sure: at fixture teardown, on a failed start, and at interpreter exit;
- raw Streamable HTTP: one fresh TCP connection per request, JSON or SSE bodies parsed the same way.

Everything the tests start goes through `spawn`, which records the process in `_LIVE`; `kill_all`
(registered with atexit) SIGKILLs every recorded process group, so a crashed test run leaves no
server-everything or proxy behind.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
PROXY_BIN = Path(os.environ.get("MCP_PROXY_BIN", REPO_ROOT / "target" / "release" / "mcp-proxy"))
NODE_BIN = TESTS_DIR / "node_modules" / ".bin"
EVERYTHING_BIN = NODE_BIN / "mcp-server-everything"
INSPECTOR_BIN = NODE_BIN / "mcp-inspector"

# The versions a stateful-era client may put in MCP-Protocol-Version after initialize.
PROTOCOL_VERSION = "2025-11-25"
ACCEPT_BOTH = "application/json, text/event-stream"

# ---------------------------------------------------------------------------------------------
# Child processes


@dataclass
class Child:
    """A process started by the tests, alone in its own process group."""

    name: str
    proc: subprocess.Popen
    # Where its stderr goes (a file, so a chatty child never blocks on a full pipe).
    stderr_path: Path

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        kill_group(self.proc)
        _LIVE.discard(self)

    def __hash__(self) -> int:
        return id(self)


_LIVE: set[Child] = set()
_LIVE_LOCK = threading.Lock()
_LOG_DIR = Path(tempfile.mkdtemp(prefix="mcp-proxy-tests-"))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group `proc` leads (npm shims spawn node children), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdout, proc.stdin):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def kill_all() -> None:
    with _LIVE_LOCK:
        children = list(_LIVE)
    for child in children:
        child.kill()


atexit.register(kill_all)

_counter = itertools.count()


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, stdout=subprocess.DEVNULL,
          cwd: Path | None = None) -> Child:
    stderr_path = _LOG_DIR / f"{name}-{next(_counter)}.stderr"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=err,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    child = Child(name, proc, stderr_path)
    with _LIVE_LOCK:
        _LIVE.add(child)
    return child


def live_children() -> list[Child]:
    with _LIVE_LOCK:
        return list(_LIVE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, child: Child, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.stderr_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{child.name} did not listen on {port} within {timeout}s:\n{child.stderr_tail()}")


# ---------------------------------------------------------------------------------------------
# The real upstream: @modelcontextprotocol/server-everything over Streamable HTTP


@dataclass
class Upstream:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def kill(self) -> None:
        self.child.kill()


def start_everything_http(port: int | None = None, timeout: float = 20.0) -> Upstream:
    """Run server-everything's Streamable HTTP transport on `port` (a free one if None)."""
    if not EVERYTHING_BIN.exists():
        raise RuntimeError(f"{EVERYTHING_BIN} missing: run tests/run.sh (it runs npm ci)")
    port = port or free_port()
    child = spawn("everything", [EVERYTHING_BIN, "streamableHttp"], env={"PORT": str(port)})
    try:
        wait_for_port(port, child, timeout)
    except BaseException:
        child.kill()
        raise
    return Upstream(child, port)


# ---------------------------------------------------------------------------------------------
# The proxy


@dataclass
class Proxy:
    child: Child
    url: str
    config_path: Path
    # The admin endpoints' base URL (http://127.0.0.1:PORT), from the `mcp-proxy admin:` line.
    admin_url: str | None = None

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.proc

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stderr_tail(self, lines: int = 40) -> str:
        return self.child.stderr_tail(lines)

    def kill(self) -> None:
        self.child.kill()


def servers_toml(servers: list[tuple[str, str]] | dict[str, str], timeout: str = "30s") -> str:
    items = servers.items() if isinstance(servers, dict) else servers
    out = []
    for name, url in items:
        out.append(f'[[servers]]\nname = "{name}"\nurl = "{url}"\ntimeout = "{timeout}"\n')
    return "\n".join(out)


READY_PREFIX = "mcp-proxy ready: "
ADMIN_PREFIX = "mcp-proxy admin: "


def start_proxy(config: str | list[tuple[str, str]] | dict[str, str], shards: int = 2,
                timeout: float = 20.0, extra_args: list[str] | None = None,
                listen: str = "127.0.0.1:0", admin_listen: str = "127.0.0.1:0") -> Proxy:
    """Write a config, start the release binary on an ephemeral port, wait for its ready line.

    `config` is either complete TOML text or a list/dict of (name, url) upstreams; `listen` is a
    fixed address when the config must name the proxy's own URL (`[auth.oauth] public_url`);
    `admin_listen` the admin listener's.
    """
    if not PROXY_BIN.exists():
        raise RuntimeError(f"{PROXY_BIN} missing: build it with `cargo build --release --workspace`")
    text = config if isinstance(config, str) else servers_toml(config)
    fd, cfg_name = tempfile.mkstemp(prefix="proxy-", suffix=".toml", dir=_LOG_DIR)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    cfg = Path(cfg_name)
    # The admin listener gets a free port too, so proxies started side by side never collide.
    argv = [PROXY_BIN, "--config", cfg, "--listen", listen, "--admin-listen", admin_listen,
            "--shards", str(shards), *(extra_args or [])]
    child = spawn("proxy", argv, env={"RUST_LOG": os.environ.get("RUST_LOG", "info")}, stdout=subprocess.PIPE)
    try:
        url, admin_url = _read_ready_line(child, timeout)
    except BaseException:
        child.kill()
        raise
    return Proxy(child, url, cfg, admin_url)


def _read_ready_line(child: Child, timeout: float) -> tuple[str, str | None]:
    """Read stdout lines until `mcp-proxy ready: URL` (and the `mcp-proxy admin: URL` line right
    after it, when the admin listener runs); the deadline holds even if stdout stays silent."""
    found: list[str] = []
    admin: list[str] = []
    done = threading.Event()

    def reader() -> None:
        try:
            for raw in child.proc.stdout:  # type: ignore[union-attr]
                line = raw.decode(errors="replace").strip()
                if line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX):].strip())
                    break
            for raw in child.proc.stdout:  # type: ignore[union-attr]
                line = raw.decode(errors="replace").strip()
                if line.startswith(ADMIN_PREFIX):
                    admin.append(line[len(ADMIN_PREFIX):].strip())
                break
            done.set()
            # Keep draining so a proxy that prints more never blocks on a full pipe.
            for _ in child.proc.stdout:  # type: ignore[union-attr]
                pass
        except (ValueError, OSError):  # stdout closed by kill()
            pass
        finally:
            done.set()

    threading.Thread(target=reader, daemon=True, name=f"{child.name}-stdout").start()
    done.wait(timeout)
    if found:
        return found[0], (admin[0] if admin else None)
    status = child.proc.poll()
    why = f"exited with {status}" if status is not None else f"printed no ready line within {timeout}s"
    raise RuntimeError(f"proxy {why}; stderr tail:\n{child.stderr_tail()}")


def wait_line(child: Child, prefix: str, timeout: float = 10.0) -> str:
    """The rest of the first stdout line of `child` starting with `prefix` (the child must have been
    spawned with stdout=PIPE); kills the child and raises when none comes within `timeout`. Stdout
    keeps being drained afterwards so a chatty child never blocks on a full pipe."""
    found: list[str] = []
    done = threading.Event()

    def reader() -> None:
        try:
            for raw in child.proc.stdout:  # type: ignore[union-attr]
                line = raw.decode(errors="replace").strip()
                if line.startswith(prefix) and not found:
                    found.append(line[len(prefix):])
                    done.set()
        except (ValueError, OSError):  # stdout closed by kill()
            pass
        finally:
            done.set()

    threading.Thread(target=reader, daemon=True, name=f"{child.name}-stdout").start()
    done.wait(timeout)
    if not found:
        child.kill()
        raise RuntimeError(f"{child.name} printed no {prefix!r} line; stderr:\n{child.stderr_tail()}")
    return found[0]


async def list_all_tools(session) -> list[Any]:
    """Every tool of an SDK ClientSession, following the server's cursors."""
    import mcp_types as types

    tools, cursor = [], None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def admin_reload(proxy: "Proxy", token: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    """POST /api/v1/reload on the proxy's admin port: the status and the JSON answer."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/reload", method="POST", data=b"",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---------------------------------------------------------------------------------------------
# Raw Streamable HTTP


def parse_sse(body: str) -> list[dict[str, Any]]:
    """Events of a text/event-stream body: dicts with `event`, `id`, `data` (joined lines), `retry`."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    data_lines: list[str] = []
    for line in body.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if line == "":
            if data_lines or current:
                current["data"] = "\n".join(data_lines)
                events.append(current)
            current, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue
        fname, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if fname == "data":
            data_lines.append(value)
        elif fname in ("event", "id", "retry"):
            current[fname] = value
    if data_lines or current:
        current["data"] = "\n".join(data_lines)
        events.append(current)
    return events


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    # JSON-RPC messages carried by the body (one for application/json, any number for SSE).
    messages: list[dict[str, Any]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def response_for(self, request_id: Any) -> dict[str, Any] | None:
        for m in self.messages:
            if m.get("id") == request_id and ("result" in m or "error" in m):
                return m
        return None


def _messages_of(content_type: str, body: bytes) -> list[dict[str, Any]]:
    if not body:
        return []
    text = body.decode(errors="replace")
    if content_type.startswith("text/event-stream"):
        out = []
        for ev in parse_sse(text):
            data = ev.get("data", "")
            if data.strip():
                try:
                    out.append(json.loads(data))
                except ValueError:
                    pass
        return out
    if content_type.startswith("application/json"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return []
        return parsed if isinstance(parsed, list) else [parsed]
    return []


def raw_request(url: str, method: str = "POST", body: bytes | str | dict | None = None,
                headers: dict[str, str] | None = None, session: str | None = None,
                accept: str | None = ACCEPT_BOTH, protocol_version: str | None = PROTOCOL_VERSION,
                timeout: float = 30.0) -> RawResponse:
    """One HTTP request on a brand-new TCP connection (so the kernel may pick any shard)."""
    host_port, path = url.split("://", 1)[1].split("/", 1)
    host, port = host_port.rsplit(":", 1)
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs: dict[str, str] = {}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    if accept is not None:
        hdrs["Accept"] = accept
    if session is not None:
        hdrs["Mcp-Session-Id"] = session
    if protocol_version is not None and session is not None:
        hdrs["MCP-Protocol-Version"] = protocol_version
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        headers_out = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    ctype = headers_out.get("content-type", "")
    return RawResponse(resp.status, headers_out, data, _messages_of(ctype, data))


_ids = itertools.count(1000)


def rpc(method: str, params: dict | None = None, request_id: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": next(_ids) if request_id is None else request_id,
                           "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def initialize_params(name: str = "raw-test-client") -> dict[str, Any]:
    return {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": name, "version": "0.0.1"}}


def raw_initialize(url: str) -> str:
    """initialize + notifications/initialized over raw HTTP; returns the Mcp-Session-Id."""
    req = rpc("initialize", initialize_params())
    r = raw_request(url, body=req)
    assert r.status == 200, f"initialize: HTTP {r.status} {r.body[:300]!r}"
    sid = r.header("mcp-session-id")
    assert sid, f"initialize response carried no Mcp-Session-Id: {r.headers}"
    answer = r.response_for(req["id"])
    assert answer is not None and "result" in answer, f"initialize answer: {r.messages}"
    n = raw_request(url, body={"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid)
    assert n.status in (200, 202), f"notifications/initialized: HTTP {n.status}"
    return sid


def raw_call_tool(url: str, session: str, name: str, arguments: dict[str, Any],
                  timeout: float = 30.0) -> tuple[RawResponse, dict[str, Any] | None]:
    req = rpc("tools/call", {"name": name, "arguments": arguments})
    r = raw_request(url, body=req, session=session, timeout=timeout)
    return r, r.response_for(req["id"])


def tool_text(result: dict[str, Any]) -> str:
    """Concatenated text content of a raw tools/call result."""
    return "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")


# ---------------------------------------------------------------------------------------------
# The official Python SDK as the client


@contextlib.asynccontextmanager
async def sdk_session(url: str, **session_kwargs: Any) -> AsyncIterator[Any]:
    """An initialized `mcp.ClientSession` over Streamable HTTP to `url`.

    `session_kwargs` go to `ClientSession` (sampling_callback, read_timeout_seconds, ...).
    """
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write):
        async with ClientSession(read, write, **session_kwargs) as session:
            await session.initialize()
            yield session


def text_of(result: Any) -> str:
    """Concatenated text content of an SDK CallToolResult / GetPromptResult message content."""
    out = []
    for c in getattr(result, "content", None) or []:
        if getattr(c, "type", None) == "text":
            out.append(c.text)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Byte-level HTTP, for requests http.client will not send (truncated bodies, huge bodies)


def socket_exchange(url: str, head: bytes, body: bytes = b"", half_close: bool = False,
                    hold: float = 0.0, timeout: float = 15.0) -> tuple[bytes, bool]:
    """Send `head` + `body` on a new connection; return every byte the server sent back and
    whether the server closed (or reset) the connection by then.

    A reader thread runs while we send, so a server that answers early (413) and closes is read
    before a reset could discard its answer. `half_close` shuts our write side after sending;
    `hold` keeps the connection open that long after sending. Returns what was read until the
    server closed, reset, or `timeout` passed.
    """
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    received = bytearray()
    closed = threading.Event()

    def reader() -> None:
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
        except OSError:
            pass
        finally:
            closed.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        try:
            sock.sendall(head + body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if hold:
            closed.wait(hold)
        else:
            deadline = time.monotonic() + timeout
            while not closed.wait(0.05) and time.monotonic() < deadline:
                if _complete_response(bytes(received)):
                    break
    finally:
        server_closed = closed.is_set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        t.join(2)
    return bytes(received), server_closed


def _complete_response(raw: bytes) -> bool:
    """Whether `raw` holds one whole HTTP response (Content-Length or chunked framing)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        fields[k.strip().lower()] = v.strip().lower()
    if b"content-length" in fields:
        try:
            return len(rest) >= int(fields[b"content-length"])
        except ValueError:
            return True
    if fields.get(b"transfer-encoding") == b"chunked":
        return rest.endswith(b"0\r\n\r\n")
    return False


def status_of(raw: bytes) -> int | None:
    """The status code of the first HTTP response in `raw`, or None if there is none."""
    if not raw.startswith(b"HTTP/1."):
        return None
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def request_head(url: str, method: str, headers: dict[str, str]) -> bytes:
    host_port, path = url.split("://", 1)[1].split("/", 1)
    lines = [f"{method} /{path} HTTP/1.1", f"Host: {host_port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
