"""Stdio on both sides: supervised child-process upstreams, and the proxy as a stdio server.

Real peers: @modelcontextprotocol/server-memory and server-filesystem (stdio), server-everything
over stdio (`mcp-server-everything stdio`) and over Streamable HTTP, and tests/fixtures/crashy_stdio.py
(a stdlib-only stdio MCP server that can exit at once, or reports its pid/cwd/env).

What the proxy is expected to do (the interface these tests hold it to):
- `[[servers]]` with `command`/`args`/`env`/`cwd` is a stdio upstream, namespaced `{server}__{tool}`;
- it logs `started stdio server NAME (pid N)` on stderr at every (re)start and copies the child's
  stderr lines into its log prefixed with the server name;
- `--stdio` speaks MCP on its own stdin/stdout, logs on stderr only;
- `--config x.json` takes a Claude Desktop / Claude Code `mcpServers` file as is;
- restarts, crash loops and the proxy's own end (SIGTERM, SIGKILL, no orphans):
  test_stdio_lifecycle.py, with this file's helpers.

Cleanup: every proxy these tests start carries MCP_PROXY_STDIO_TEST_TAG=<random> in its environment
(children do not inherit it: no MCP_PROXY_* variable reaches a child). After each test (and at
interpreter exit) every process with the tag, and every descendant of one, is SIGKILLed; the
orphan tests below check by pid that nothing outlives a proxy.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

import harness
from harness import EVERYTHING_BIN, NODE_BIN, PROXY_BIN, TESTS_DIR, sdk_session, text_of

MEMORY_BIN = NODE_BIN / "mcp-server-memory"
FILESYSTEM_BIN = NODE_BIN / "mcp-server-filesystem"
CRASHY = TESTS_DIR / "fixtures" / "crashy_stdio.py"
PYTHON = sys.executable

TAG_VAR = "MCP_PROXY_STDIO_TEST_TAG"
TAG = uuid.uuid4().hex
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Tools the pinned servers expose (checked against the servers directly by `direct_tools`).
MEMORY_TOOLS = {"create_entities", "create_relations", "add_observations", "delete_entities",
                "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes"}

STARTED_RE = re.compile(r"started stdio server [`\"']?([\w.-]+)[`\"']? \(pid (\d+)\)")


# ---------------------------------------------------------------------------------------------
# /proc


def proc_stat(pid: int) -> dict | None:
    """state, ppid, utime+stime (ticks) and starttime of `pid`, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "cpu": int(rest[11]) + int(rest[12]),
            "start": int(rest[19])}


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(root: int) -> dict[int, int]:
    """Every living descendant of `root`: pid -> starttime (so a reused pid is not mistaken for it)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is None or st["state"] in "ZX":
            continue
        children.setdefault(st["ppid"], []).append(pid)
        starts[pid] = st["start"]
    out: dict[int, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper counts as gone)."""
    st = proc_stat(pid)
    if st is None or st["state"] in "ZX":
        return False
    return start is None or st["start"] == start


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def tagged_pids() -> list[int]:
    needle = f"{TAG_VAR}={TAG}".encode()
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            out.append(pid)
    return out


def sweep() -> None:
    """SIGKILL every process that carries this run's tag, and all their descendants."""
    victims: set[int] = set()
    for pid in tagged_pids():
        victims.add(pid)
        victims.update(descendants(pid))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


atexit.register(sweep)


def wait_until(pred, timeout: float, interval: float = 0.1):
    """Poll `pred` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Configs and proxies


def q(s) -> str:
    """A TOML basic string (a JSON string is one, for the paths used here)."""
    return json.dumps(str(s))


def stdio_toml(name: str, command, args=(), env: dict | None = None, cwd=None) -> str:
    lines = ["[[servers]]", f"name = {q(name)}", f"command = {q(command)}",
             "args = [" + ", ".join(q(a) for a in args) + "]"]
    if env:
        lines.append("env = { " + ", ".join(f"{k} = {q(v)}" for k, v in env.items()) + " }")
    if cwd is not None:
        lines.append(f"cwd = {q(cwd)}")
    return "\n".join(lines) + "\n"


def http_toml(name: str, url: str, timeout: str = "30s") -> str:
    return f'[[servers]]\nname = {q(name)}\nurl = {q(url)}\ntimeout = "{timeout}"\n'


def proxy_env() -> dict[str, str]:
    return {"RUST_LOG": os.environ.get("RUST_LOG", "info"), TAG_VAR: TAG}


def require_proxy() -> None:
    if not PROXY_BIN.exists():
        pytest.fail(f"{PROXY_BIN} missing: build it with `cargo build --release --workspace`")


class Procs:
    """Proxies started by one test (HTTP or stdio mode); all killed with their descendants after it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.children: list[harness.Child] = []

    def write(self, text: str, suffix: str) -> Path:
        path = self.tmp / f"proxy-{len(self.children)}-{uuid.uuid4().hex[:6]}{suffix}"
        path.write_text(text)
        return path

    def proxy(self, config: str | Path, shards: int = 2, suffix: str = ".toml",
              timeout: float = 60.0) -> harness.Proxy:
        """Start the proxy on 127.0.0.1:0 with `config` (TOML text, or the path of a config file)."""
        require_proxy()
        path = config if isinstance(config, Path) else self.write(config, suffix)
        argv = [PROXY_BIN, "--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--shards", str(shards)]
        child = harness.spawn("proxy", argv, env=proxy_env(), stdout=subprocess.PIPE)
        self.children.append(child)
        try:
            url, _admin = harness._read_ready_line(child, timeout)
        except BaseException:
            self.kill(child)
            raise
        return harness.Proxy(child, url, path)

    def stdio_proxy(self, config_text: str, suffix: str = ".toml") -> tuple[harness.Child, "queue.Queue[str | None]"]:
        """`mcp-proxy --stdio --config FILE` with pipes on stdin/stdout; stdout lines arrive in the queue."""
        require_proxy()
        path = self.write(config_text, suffix)
        stderr_path = self.tmp / f"stdio-proxy-{uuid.uuid4().hex[:6]}.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([str(PROXY_BIN), "--stdio", "--config", str(path)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    env={**os.environ, **proxy_env()}, start_new_session=True)
        child = harness.Child("stdio-proxy", proc, stderr_path)
        with harness._LIVE_LOCK:
            harness._LIVE.add(child)
        self.children.append(child)
        lines: queue.Queue[str | None] = queue.Queue()

        def reader() -> None:
            try:
                for raw in proc.stdout:  # type: ignore[union-attr]
                    lines.put(raw.decode(errors="replace"))
            except (ValueError, OSError):
                pass
            finally:
                lines.put(None)

        threading.Thread(target=reader, daemon=True).start()
        return child, lines

    def kill(self, child: harness.Child) -> None:
        victims = descendants(child.proc.pid) if child.proc.poll() is None else {}
        child.kill()
        for pid, start in victims.items():
            if not alive(pid, start):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        for child in reversed(self.children):
            self.kill(child)
        sweep()


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()


def log_of(proxy_or_path) -> str:
    path = proxy_or_path if isinstance(proxy_or_path, Path) else proxy_or_path.child.stderr_path
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def started(log: str, name: str | None = None) -> list[tuple[str, int]]:
    """(server, pid) of every `started stdio server NAME (pid N)` line, in order."""
    return [(m.group(1), int(m.group(2))) for m in STARTED_RE.finditer(log)
            if name is None or m.group(1) == name]


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# Three real servers: memory + filesystem (stdio), everything (HTTP)


class Three:
    """Directories and names for one memory + filesystem + everything topology."""

    def __init__(self, tmp: Path, everything_url: str) -> None:
        self.root = tmp.resolve()
        self.fsdir = self.root / "fs-allowed"
        self.fsdir.mkdir(exist_ok=True)
        self.memfile = self.root / "memory.jsonl"
        self.everything_url = everything_url
        self.token = uuid.uuid4().hex[:10]

    def toml(self) -> str:
        return (stdio_toml("memory", MEMORY_BIN, [], env={"MEMORY_FILE_PATH": self.memfile}, cwd=self.root)
                + stdio_toml("filesystem", FILESYSTEM_BIN, [self.fsdir])
                + http_toml("everything", self.everything_url))

    def mcp_servers(self, style: str) -> dict:
        """The same three as a client's `mcpServers` JSON (Claude Desktop / Cursor, or Claude Code)."""
        memory = {"command": str(MEMORY_BIN), "args": [], "env": {"MEMORY_FILE_PATH": str(self.memfile)}}
        filesystem = {"command": str(FILESYSTEM_BIN), "args": [str(self.fsdir)]}
        everything = {"url": self.everything_url}
        if style == "claude_code":
            memory = {"type": "stdio", **memory}
            filesystem = {"type": "stdio", **filesystem, "env": {}}
            everything = {"type": "http", **everything}
        return {"mcpServers": {"memory": memory, "filesystem": filesystem, "everything": everything}}


@pytest.fixture(scope="module")
def direct_tools():
    """Tool names of memory and filesystem, asked of the servers directly over stdio (no proxy)."""
    tmp = Path(harness._LOG_DIR) / f"direct-{uuid.uuid4().hex[:6]}"
    (tmp / "fs").mkdir(parents=True)

    async def names(command, args, env=None):
        params = StdioServerParameters(command=str(command), args=[str(a) for a in args],
                                       env={**(env or {}), TAG_VAR: TAG})
        with open(tmp / "direct.stderr", "a") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w):
                async with ClientSession(r, w) as s:
                    await s.initialize()
                    return {t.name for t in await harness.list_all_tools(s)}

    async def go():
        mem = await names(MEMORY_BIN, [], {"MEMORY_FILE_PATH": str(tmp / "m.jsonl")})
        fs = await names(FILESYSTEM_BIN, [tmp / "fs"])
        return {"memory": mem, "filesystem": fs}

    try:
        out = anyio.run(go)
    finally:
        sweep()
    assert out["memory"] == MEMORY_TOOLS, out["memory"]
    assert {"read_text_file", "write_file", "list_directory"} <= out["filesystem"], out["filesystem"]
    return out


async def exercise_three(session, three: Three, direct: dict[str, set[str]]) -> None:
    """List the merged tools and call one tool of each server, checking every answer."""
    # The proxy's own tools (proxy__*) are not any server's.
    names = [t.name for t in await harness.list_all_tools(session) if not t.name.startswith("proxy__")]
    assert len(names) == len(set(names)), f"duplicate tool names: {sorted(names)}"
    by_server: dict[str, set[str]] = {}
    for n in names:
        server, sep, tool = n.partition("__")
        assert sep, f"tool {n!r} is not namespaced"
        by_server.setdefault(server, set()).add(tool)
    assert set(by_server) == {"memory", "filesystem", "everything"}, sorted(names)
    assert by_server["memory"] == direct["memory"], (by_server["memory"], direct["memory"])
    assert by_server["filesystem"] == direct["filesystem"], (by_server["filesystem"], direct["filesystem"])
    assert {"echo", "get-sum"} <= by_server["everything"], by_server["everything"]

    # memory: create an entity, read the graph back, and the file named by env holds it.
    entity = f"proxy-entity-{three.token}"
    created = await session.call_tool("memory__create_entities", {"entities": [
        {"name": entity, "entityType": "test", "observations": [f"seen {three.token}"]}]})
    assert not created.is_error, text_of(created)
    graph = await session.call_tool("memory__read_graph", {})
    assert not graph.is_error, text_of(graph)
    parsed = json.loads(text_of(graph))
    assert [e for e in parsed["entities"] if e["name"] == entity and f"seen {three.token}" in e["observations"]], parsed
    assert entity in three.memfile.read_text(), "MEMORY_FILE_PATH from the config's env did not reach the child"

    # filesystem: write a file in the allowed dir, read it back, list it, and see it on disk.
    target = three.fsdir / f"note-{three.token}.txt"
    wrote = await session.call_tool("filesystem__write_file", {"path": str(target), "content": f"hello {three.token}"})
    assert not wrote.is_error, text_of(wrote)
    assert target.read_text() == f"hello {three.token}"
    read = await session.call_tool("filesystem__read_text_file", {"path": str(target)})
    assert not read.is_error and text_of(read) == f"hello {three.token}", text_of(read)
    listing = await session.call_tool("filesystem__list_directory", {"path": str(three.fsdir)})
    assert f"[FILE] {target.name}" in text_of(listing), text_of(listing)
    # The allowed-directory argument reached the child: outside it is refused.
    outside = await session.call_tool("filesystem__read_text_file", {"path": "/etc/passwd"})
    assert outside.is_error and "denied" in text_of(outside).lower(), text_of(outside)

    # everything (HTTP)
    echo = await session.call_tool("everything__echo", {"message": f"over http {three.token}"})
    assert text_of(echo) == f"Echo: over http {three.token}"


# ---------------------------------------------------------------------------------------------
# 1. aggregation, the client over HTTP


@pytest.mark.timeout(120)
def test_three_servers_aggregated_over_http(procs, spawner, tmp_path, direct_tools):
    three = Three(tmp_path, spawner.everything().url)
    proxy = procs.proxy(three.toml(), shards=2)

    async def go():
        async with sdk_session(proxy.url) as s:
            await exercise_three(s, three, direct_tools)

    anyio.run(go)
    log = log_of(proxy)
    names = {n for n, _ in started(log)}
    assert {"memory", "filesystem"} <= names, f"no `started stdio server` line for both:\n{tail(log)}"
    # The children's own stderr ends up in the proxy's log, under the server's name.
    assert re.search(r"memory.*Knowledge Graph MCP Server running on stdio", log), tail(log)
    assert re.search(r"filesystem.*Secure MCP Filesystem Server running on stdio", log), tail(log)
    assert proxy.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# 2. the same, the proxy itself launched over stdio by the SDK's stdio client


@pytest.mark.timeout(120)
def test_three_servers_aggregated_over_stdio(procs, spawner, tmp_path, direct_tools):
    require_proxy()
    three = Three(tmp_path, spawner.everything().url)
    cfg = procs.write(three.toml(), ".toml")
    errlog_path = tmp_path / "stdio-proxy.stderr"

    async def go():
        params = StdioServerParameters(command=str(PROXY_BIN), args=["--stdio", "--config", str(cfg)],
                                       env=proxy_env())
        with open(errlog_path, "w") as errlog, anyio.fail_after(90):
            async with stdio_client(params, errlog=errlog) as (r, w):
                async with ClientSession(r, w) as s:
                    init = await s.initialize()
                    assert init.capabilities.tools is not None
                    await exercise_three(s, three, direct_tools)
                    return init

    try:
        anyio.run(go)
    except BaseException:
        print(f"stdio proxy stderr:\n{tail(log_of(errlog_path))}")
        raise
    log = log_of(errlog_path)
    assert {"memory", "filesystem"} <= {n for n, _ in started(log)}, tail(log)


@pytest.mark.timeout(60)
def test_stdio_mode_stdout_carries_only_jsonrpc(procs):
    """Raw view of `--stdio`: every stdout line is one JSON-RPC message; logs go to stderr; EOF on
    stdin ends the proxy and its children."""
    config = stdio_toml("fx", PYTHON, [CRASHY])
    child, lines = procs.stdio_proxy(config)
    proc = child.proc

    def send(msg: dict) -> None:
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()

    seen: list[str] = []

    def answer(req_id, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            assert line is not None, f"stdout closed; stderr:\n{child.stderr_tail()}"
            seen.append(line)
            if not line.strip():
                continue
            msg = json.loads(line)  # a log line on stdout fails here
            assert msg.get("jsonrpc") == "2.0", line
            if msg.get("id") == req_id and ("result" in msg or "error" in msg):
                return msg
        raise AssertionError(f"no answer to id {req_id} within {timeout}s; stdout so far {seen}; "
                             f"stderr:\n{child.stderr_tail()}")

    send(harness.rpc("initialize", harness.initialize_params("raw-stdio"), request_id=1))
    init = answer(1)
    assert "result" in init and init["result"]["capabilities"].get("tools") is not None, init
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send(harness.rpc("tools/list", {}, request_id=2))
    names = {t["name"] for t in answer(2)["result"]["tools"]}
    assert {"fx__echo", "fx__whoami"} <= names, names
    send(harness.rpc("tools/call", {"name": "fx__echo", "arguments": {"message": "raw stdio"}}, request_id=3))
    echoed = answer(3)
    assert harness.tool_text(echoed["result"]) == "Echo: raw stdio", echoed

    log = child.stderr_tail(400)
    pids = [pid for _, pid in started(log, "fx")]
    assert pids, f"no `started stdio server fx (pid N)` on stderr:\n{log}"
    assert re.search(r"fx.*crashy_stdio serving", log), f"child stderr not in the log under its name:\n{log}"

    # A client ending the session closes stdin: the proxy exits and takes its children along.
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the --stdio proxy still runs 10 s after its stdin closed:\n{child.stderr_tail()}")
    gone = wait_until(lambda: not any(alive(p) for p in pids), 5)
    assert gone, f"children outlived the --stdio proxy: {[(p, cmdline(p)) for p in pids if alive(p)]}"


def test_stdio_mode_says_auth_does_not_apply(procs):
    """An operator who enabled [auth] and runs --stdio is told the policies do not apply there;
    the process that started the proxy is served as before."""
    config = ('[auth]\nenabled = true\n\n[[auth.clients]]\nname = "ci"\n'
              'api_keys = ["a-key-of-sixteen-chars-or-more"]\nservers = ["nothing-*"]\n\n'
              + stdio_toml("fx", PYTHON, [CRASHY]))
    child, lines = procs.stdio_proxy(config)
    proc = child.proc
    proc.stdin.write((json.dumps(harness.rpc("initialize", harness.initialize_params("auth-stdio"),
                                             request_id=1)) + "\n").encode())
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    init = None
    while init is None and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        assert line is not None, f"stdout closed; stderr:\n{child.stderr_tail()}"
        msg = json.loads(line)
        if msg.get("id") == 1:
            init = msg
    assert init is not None and "result" in init, (init, child.stderr_tail())
    log = child.stderr_tail(200)
    assert "[auth] is enabled but --stdio serves only the process that started it" in log, log
    proc.stdin.close()
    proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# 3. 50 concurrent calls from 5 sessions to one stdio child


@pytest.mark.timeout(120)
def test_fifty_concurrent_calls_to_one_stdio_upstream(procs):
    proxy = procs.proxy(stdio_toml("evstdio", EVERYTHING_BIN, ["stdio"]), shards=2)
    results: dict[str, str] = {}
    errors: list[str] = []

    async def one_session(i: int) -> None:
        async with sdk_session(proxy.url) as s:
            async def call(j: int) -> None:
                msg = f"s{i}-c{j}-{uuid.uuid4().hex[:8]}"
                try:
                    r = await s.call_tool("evstdio__echo", {"message": msg})
                    results[msg] = "ERROR " + text_of(r) if r.is_error else text_of(r)
                except MCPError as e:
                    errors.append(f"{msg}: {e.code} {e.message}")

            async with anyio.create_task_group() as tg:
                for j in range(10):
                    tg.start_soon(call, j)

    async def go():
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(one_session, i)

    anyio.run(go)
    assert not errors, f"{len(errors)} calls failed: {errors[:5]}"
    assert len(results) == 50, len(results)
    wrong = {m: got for m, got in results.items() if got != f"Echo: {m}"}
    assert not wrong, f"{len(wrong)} of 50 answers are not their own: {list(wrong.items())[:5]}"
    assert started(log_of(proxy), "evstdio"), tail(log_of(proxy))


# ---------------------------------------------------------------------------------------------
# Progress from the one stdio child goes back to the session that asked for it


@pytest.mark.timeout(90)
def test_progress_from_shared_stdio_child_reaches_its_own_session(procs):
    proxy = procs.proxy(stdio_toml("evstdio", EVERYTHING_BIN, ["stdio"]), shards=2)
    steps = {0: 3, 1: 5, 2: 7}
    got: dict[int, list] = {i: [] for i in steps}
    results: dict[int, str] = {}

    async def one(i: int) -> None:
        async with sdk_session(proxy.url) as s:
            async def on_progress(progress, total, message):
                got[i].append((progress, total))

            r = await s.call_tool("evstdio__trigger-long-running-operation",
                                  {"duration": 1.5, "steps": steps[i]}, progress_callback=on_progress,
                                  read_timeout_seconds=30)
            results[i] = text_of(r)

    async def go():
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in steps:
                    tg.start_soon(one, i)

    anyio.run(go)
    for i, n in steps.items():
        assert results[i] == f"Long running operation completed. Duration: 1.5 seconds, Steps: {n}.", results
        totals = {t for _, t in got[i]}
        assert totals == {float(n)}, f"session {i} (steps {n}) got progress of other calls: {got[i]}"
        assert [p for p, _ in got[i]] == [float(k) for k in range(1, n + 1)], f"session {i}: {got[i]}"


# ---------------------------------------------------------------------------------------------
# Config details of a stdio upstream: env and cwd reach the child, its pid is the logged one


@pytest.mark.timeout(60)
def test_stdio_child_gets_env_and_cwd(procs, tmp_path):
    workdir = (tmp_path / "child-cwd").resolve()
    workdir.mkdir()
    mark = uuid.uuid4().hex
    proxy = procs.proxy(stdio_toml("fx", PYTHON, [CRASHY], env={"CRASHY_MARK": mark}, cwd=workdir))

    async def go():
        async with sdk_session(proxy.url) as s:
            return json.loads(text_of(await s.call_tool("fx__whoami", {})))

    info = anyio.run(go)
    assert info["mark"] == mark, info
    assert info["cwd"] == str(workdir), info
    # The server runs under the proxy's supervisor (a copy of the proxy binary that ends the
    # whole group when the proxy dies), which is the process the log names.
    supervisor = info["ppid"]
    assert proc_stat(supervisor)["ppid"] == proxy.proc.pid, f"not started by the proxy: {info}"
    assert "__stdio-supervisor" in cmdline(supervisor), cmdline(supervisor)
    assert ("fx", supervisor) in started(log_of(proxy), "fx"), tail(log_of(proxy))
    # Its own process group (so a terminal's Ctrl-C to the proxy's group does not hit it directly).
    assert os.getpgid(info["pid"]) == supervisor != os.getpgid(proxy.proc.pid)


def test_stdio_replicas_share_sessions(procs):
    config = stdio_toml("fx", PYTHON, [CRASHY]) + "replicas = 2\n"
    proxy = procs.proxy(config, shards=2)

    async def one_session():
        async with sdk_session(proxy.url) as s:
            first = json.loads(text_of(await s.call_tool("fx__whoami", {})))
            again = json.loads(text_of(await s.call_tool("fx__whoami", {})))
            return first["pid"], again["pid"]

    async def go():
        return [await one_session() for _ in range(4)]

    pids = anyio.run(go)
    assert all(a == b for a, b in pids), f"a session moved between children: {pids}"
    assert len({a for a, _ in pids}) == 2, f"sessions did not spread over both children: {pids}"
    assert len(started(log_of(proxy), "fx")) == 2, tail(log_of(proxy))


# ---------------------------------------------------------------------------------------------
# 6. a Claude Desktop / Claude Code `mcpServers` file as the proxy's config


@pytest.mark.timeout(120)
@pytest.mark.parametrize("style", ["claude_desktop", "claude_code"])
def test_mcpservers_json_config_works_unchanged(procs, spawner, tmp_path, direct_tools, style):
    three = Three(tmp_path, spawner.everything().url)
    cfg = tmp_path / "claude_desktop_config.json"
    cfg.write_text(json.dumps(three.mcp_servers(style), indent=2))
    proxy = procs.proxy(cfg, shards=2)

    async def go():
        async with sdk_session(proxy.url) as s:
            await exercise_three(s, three, direct_tools)

    anyio.run(go)
