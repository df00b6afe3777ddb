"""Replicas: balancing, health, failover, safe retries, portable sessions.

Topologies are started per test and killed at teardown whatever the outcome (the `spawner`
fixture, or `Fleet` below for processes `spawner` cannot start: server-everything with an
environment, `mcp-loadgen upstream` with options, a proxy on a fixed port).

Telling replicas apart:
- server-everything replicas get `REPLICA_ID=<name>` in their environment; its `get-env` tool
  (readOnlyHint) prints the environment, so `ev__get-env` shows which replica a session is bound to;
- `mcp-loadgen upstream --id NAME` answers NAME from its `whoami` tool (readOnlyHint,
  idempotentHint); `--log-requests` writes one stderr line per request it read (counts what reached
  it), `--crash-on TOOL` makes it exit after reading a call of TOOL, before answering.

Environment: MCP_PROXY_BIN and MCP_LOADGEN_BIN override the binaries (default target/release/).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness
from harness import raw_call_tool, raw_initialize, raw_request, rpc, tool_text

LOADGEN_BIN = Path(os.environ.get("MCP_LOADGEN_BIN", harness.REPO_ROOT / "target" / "release" / "mcp-loadgen"))
LOADGEN_READY = "mcp-loadgen upstream ready: "
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Replica:
    """One upstream replica: a server-everything or an mcp-loadgen upstream."""

    name: str
    child: harness.Child
    port: int
    argv: list  # to restart it on the same port
    env: dict

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def kill(self) -> None:
        self.child.kill()

    def stderr(self) -> str:
        try:
            return self.child.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def requests_of(self, method: str, tool: str | None = None) -> int:
        """Requests this replica read (needs --log-requests)."""
        want = f"request {method}" + (f" {tool}" if tool else "")
        return sum(1 for line in self.stderr().splitlines() if line.rstrip().endswith(want))


class Fleet:
    """Starts replicas and proxies for one test; kills all of them at teardown."""

    def __init__(self) -> None:
        self.children: list[harness.Child] = []

    def _track(self, child: harness.Child) -> harness.Child:
        self.children.append(child)
        return child

    def everything(self, name: str, port: int | None = None) -> Replica:
        if not harness.EVERYTHING_BIN.exists():
            raise RuntimeError(f"{harness.EVERYTHING_BIN} missing: run tests/run.sh")
        port = port or harness.free_port()
        argv = [harness.EVERYTHING_BIN, "streamableHttp"]
        env = {"PORT": str(port), "REPLICA_ID": name}
        child = self._track(harness.spawn(f"everything-{name}", argv, env=env))
        harness.wait_for_port(port, child)
        return Replica(name, child, port, argv, env)

    def loadgen(self, name: str, *args: str, port: int | None = None) -> Replica:
        if not LOADGEN_BIN.exists():
            raise RuntimeError(f"{LOADGEN_BIN} missing: cargo build --release -p mcp-loadgen")
        port = port or harness.free_port()
        argv = [LOADGEN_BIN, "upstream", "--listen", f"127.0.0.1:{port}", "--id", name, "--log-requests", *args]
        child = self._track(harness.spawn(f"loadgen-{name}", argv, stdout=subprocess.PIPE))
        harness.wait_line(child, LOADGEN_READY, 10.0)
        return Replica(name, child, port, argv, {})

    def restart(self, r: Replica) -> Replica:
        """Start `r` again on its port (after it was killed)."""
        r.kill()
        deadline = time.monotonic() + 10
        while True:
            try:
                if r.argv[0] == harness.EVERYTHING_BIN:
                    return self.everything(r.name, r.port)
                return self.loadgen(r.name, *r.argv[7:], port=r.port)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def proxy(self, config: str, listen: str = "127.0.0.1:0", shards: int = 2,
              env: dict | None = None) -> harness.Proxy:
        if not harness.PROXY_BIN.exists():
            raise RuntimeError(f"{harness.PROXY_BIN} missing: cargo build --release")
        fd, name = tempfile.mkstemp(prefix="proxy-", suffix=".toml", dir=harness._LOG_DIR)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        argv = [harness.PROXY_BIN, "--config", name, "--listen", listen, "--shards", str(shards)]
        if _has_admin_listener():
            # A free admin port too, so proxies side by side (or restarted) never collide.
            argv += ["--admin-listen", "127.0.0.1:0"]
        full_env = {"RUST_LOG": os.environ.get("RUST_LOG", "info"), **(env or {})}
        child = self._track(harness.spawn("proxy", argv, env=full_env, stdout=subprocess.PIPE))
        try:
            ready = harness._read_ready_line(child, 20.0)
        except BaseException:
            child.kill()
            raise
        url = ready[0] if isinstance(ready, tuple) else ready
        return harness.Proxy(child, url, Path(name))

    def close(self) -> None:
        for c in reversed(self.children):
            c.kill()
        self.children.clear()


_ADMIN: list[bool] = []


def _has_admin_listener() -> bool:
    if not _ADMIN:
        out = subprocess.run([harness.PROXY_BIN, "--help"], capture_output=True, text=True, timeout=10)
        _ADMIN.append("--admin-listen" in out.stdout)
    return _ADMIN[0]


@pytest.fixture
def fleet():
    f = Fleet()
    try:
        yield f
    finally:
        f.close()


def new_key() -> str:
    return os.urandom(32).hex()


def config(replicas: list[Replica], *, key: str | None = None, strategy: str | None = None,
           stateless: bool = False, interval: str = "1s", threshold: int = 3, timeout: str = "10s",
           drain: set[str] = frozenset(), weights: dict[str, int] | None = None) -> str:
    lines = ["[proxy]", 'listen = "127.0.0.1:0"']
    if key:
        lines.append(f'session_key = "{key}"')
    lines += ["", "[[servers]]", 'name = "ev"', "replicas = ["]
    for r in replicas:
        extra = ""
        if weights and r.name in weights:
            extra += f", weight = {weights[r.name]}"
        if r.name in drain:
            extra += ", drain = true"
        lines.append(f'  {{ url = "{r.url}"{extra} }},')
    lines.append("]")
    if strategy:
        lines.append(f'strategy = "{strategy}"')
    if stateless:
        lines.append("stateless = true")
    lines += [f'health_check_interval = "{interval}"', f"failover_threshold = {threshold}",
              f'timeout = "{timeout}"']
    return "\n".join(lines) + "\n"


def proxy_log(proxy: harness.Proxy) -> str:
    return ANSI.sub("", proxy.child.stderr_path.read_text(errors="replace"))


def wait_log(proxy: harness.Proxy, pattern: str, timeout: float) -> str:
    """Wait until a proxy stderr line matches `pattern` (a regex); returns the line."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        for line in proxy_log(proxy).splitlines():
            if rx.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no proxy log line matching {pattern!r} within {timeout}s; tail:\n"
                                 + proxy.stderr_tail(30))
        time.sleep(0.1)


def unhealthy_rx(r: Replica) -> str:
    return rf"replica \d+ of ev \({re.escape(r.url)}\) is unhealthy"


def healthy_again_rx(r: Replica) -> str:
    return rf"replica \d+ of ev \({re.escape(r.url)}\) is healthy again"


def call_ok(url: str, sid: str, tool: str, args: dict, timeout: float = 30.0) -> str:
    """tools/call that must succeed; returns the text."""
    r, answer = raw_call_tool(url, sid, tool, args, timeout=timeout)
    assert r.status == 200, f"{tool}: HTTP {r.status} {r.body[:300]!r}"
    assert answer is not None, f"{tool}: no answer in {r.messages}"
    assert "result" in answer, f"{tool}: {answer}"
    assert not answer["result"].get("isError"), f"{tool}: {answer}"
    return tool_text(answer["result"])


def whoami(url: str, sid: str) -> str:
    return call_ok(url, sid, "ev__whoami", {})


def everything_replica(url: str, sid: str) -> str:
    """Which server-everything replica `sid` is bound to (its REPLICA_ID)."""
    return json.loads(call_ok(url, sid, "ev__get-env", {}))["REPLICA_ID"]


def new_sessions_on(url: str, count: int) -> Counter:
    """Open `count` new sessions, ask each once which replica serves it."""
    return Counter(whoami(url, raw_initialize(url)) for _ in range(count))


# ---------------------------------------------------------------------------------------------
# 1. One of three replicas killed under load: no failed call, its sessions carry on


def test_replica_killed_under_load_no_failed_calls(fleet):
    reps = [fleet.everything(f"r{i}") for i in range(3)]
    proxy = fleet.proxy(config(reps, key=new_key(), interval="1s", threshold=3))
    url = proxy.url

    sessions = [raw_initialize(url) for _ in range(8)]
    bound = {sid: everything_replica(url, sid) for sid in sessions}
    by_replica = Counter(bound.values())
    # The victim: a replica with sessions bound to it (the busiest one).
    victim_name = by_replica.most_common(1)[0][0]
    victim = next(r for r in reps if r.name == victim_name)
    orphans = [sid for sid, name in bound.items() if name == victim_name]

    failures: list[str] = []
    after_kill: Counter = Counter()
    killed_at: list[float] = []
    calls = Counter()
    stop = time.monotonic() + 6.0
    lock = threading.Lock()

    def worker(sid: str, n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            msg = f"s{n}-{i}"
            try:
                r, answer = raw_call_tool(url, sid, "ev__echo", {"message": msg}, timeout=20)
                ok = (r.status == 200 and answer is not None and "result" in answer
                      and not answer["result"].get("isError") and tool_text(answer["result"]) == f"Echo: {msg}")
                why = None if ok else f"HTTP {r.status}: {answer or r.body[:200]!r}"
            except Exception as e:  # noqa: BLE001
                why = f"{type(e).__name__}: {e}"
            with lock:
                calls[sid] += 1
                if why:
                    failures.append(f"session {n} ({bound[sid]}) call {i}: {why}")
                elif killed_at:
                    after_kill[sid] += 1

    threads = [threading.Thread(target=worker, args=(sid, n), daemon=True) for n, sid in enumerate(sessions)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    victim.kill()  # SIGKILL to its process group
    with lock:
        killed_at.append(time.monotonic())
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "workers still running after 60 s"

    assert not failures, f"{len(failures)} failed call(s) of {sum(calls.values())}; first: {failures[:5]}"
    assert sum(calls.values()) > 50, f"too little load to mean anything: {dict(calls)}"
    for sid in orphans:
        assert after_kill[sid] > 0, f"session bound to the killed {victim_name} made no successful call after the kill"
        # Same session id, now served by a live replica.
        now = everything_replica(url, sid)
        assert now != victim_name, f"session still reports the killed replica {victim_name}"
    for sid in sessions:
        assert after_kill[sid] > 0, f"session {sid[:12]}… made no call after the kill"


# ---------------------------------------------------------------------------------------------
# 2. A replica slowed by 20 ms gets under 10% of new work


def _warm_up(url: str, seconds: float, per_session: int) -> None:
    stop = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop:
            sid = raw_initialize(url)
            for _ in range(per_session):
                whoami(url, sid)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def _assert_slow_shunned(counts: Counter, total: int) -> None:
    assert sum(counts.values()) == total
    assert counts["slow"] < 0.10 * total, f"slow replica got {counts['slow']}/{total} of new work: {dict(counts)}"
    for fast in ("fast1", "fast2"):
        assert counts[fast] >= 0.15 * total, f"{fast} got {counts[fast]}/{total}, the fast ones should share: {dict(counts)}"


def test_slow_replica_gets_little_new_work_sessions(fleet):
    reps = [fleet.loadgen("slow", "--latency", "20ms"), fleet.loadgen("fast1"), fleet.loadgen("fast2")]
    proxy = fleet.proxy(config(reps, strategy="least_latency", interval="1s"))
    _warm_up(proxy.url, 3.0, per_session=5)

    total = 80
    counts: Counter = Counter()
    lock = threading.Lock()

    def opener(n: int) -> None:
        c = new_sessions_on(proxy.url, n)
        with lock:
            counts.update(c)

    threads = [threading.Thread(target=opener, args=(total // 4,), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    _assert_slow_shunned(counts, total)


def test_slow_replica_gets_little_new_work_stateless(fleet):
    reps = [fleet.loadgen("slow", "--latency", "20ms", "--stateless"),
            fleet.loadgen("fast1", "--stateless"), fleet.loadgen("fast2", "--stateless")]
    proxy = fleet.proxy(config(reps, strategy="least_latency", stateless=True, interval="1s"))
    _warm_up(proxy.url, 3.0, per_session=10)

    sid = raw_initialize(proxy.url)
    total = 200
    counts = Counter(whoami(proxy.url, sid) for _ in range(total))
    _assert_slow_shunned(counts, total)


# ---------------------------------------------------------------------------------------------
# 3. Health: ejected when failing checks, re-admitted after recovery; drain


def test_dead_replica_ejected_and_readmitted(fleet):
    reps = [fleet.loadgen("a"), fleet.loadgen("b"), fleet.loadgen("c")]
    a, b, c = reps
    proxy = fleet.proxy(config(reps, strategy="round_robin", interval="500ms", threshold=3))
    url = proxy.url

    before = new_sessions_on(url, 12)
    assert before["c"] > 0, f"c got no session while healthy: {dict(before)}"

    c.kill()
    line = wait_log(proxy, unhealthy_rx(c), 15)
    # Logged at info or above (shown under RUST_LOG=info).
    assert re.search(r"\b(INFO|WARN|ERROR)\b", line), f"health change not logged at info or above: {line}"
    assert not re.search(unhealthy_rx(a) + "|" + unhealthy_rx(b), proxy_log(proxy)), "a live replica was marked unhealthy"

    while_down = new_sessions_on(url, 20)
    assert while_down["c"] == 0, f"unhealthy c got new sessions: {dict(while_down)}"
    assert set(while_down) <= {"a", "b"}

    c2 = fleet.restart(c)
    assert c2.port == c.port
    wait_log(proxy, healthy_again_rx(c), 15)

    after = new_sessions_on(url, 20)
    assert after["c"] > 0, f"c got no new session after it was healthy again: {dict(after)}"


def test_stalled_replica_ejected_and_readmitted(fleet):
    """A replica that stops answering (SIGSTOP: connections accepted, nothing answered)."""
    reps = [fleet.loadgen("a"), fleet.loadgen("b"), fleet.loadgen("c")]
    c = reps[2]
    proxy = fleet.proxy(config(reps, strategy="round_robin", interval="500ms", threshold=3, timeout="2s"))
    url = proxy.url
    assert new_sessions_on(url, 12)["c"] > 0

    os.killpg(c.child.proc.pid, signal.SIGSTOP)
    try:
        wait_log(proxy, unhealthy_rx(c), 20)
        while_down = new_sessions_on(url, 20)
        assert while_down["c"] == 0, f"stalled c got new sessions: {dict(while_down)}"
    finally:
        os.killpg(c.child.proc.pid, signal.SIGCONT)
    wait_log(proxy, healthy_again_rx(c), 20)
    after = new_sessions_on(url, 20)
    assert after["c"] > 0, f"c got no new session after it was healthy again: {dict(after)}"


@pytest.mark.parametrize("strategy", ["least_latency", "round_robin", "weighted", "random"])
def test_drained_replica_gets_no_new_sessions(fleet, strategy):
    reps = [fleet.loadgen("a"), fleet.loadgen("b"), fleet.loadgen("c")]
    proxy = fleet.proxy(config(reps, strategy=strategy, drain={"c"}))
    counts = new_sessions_on(proxy.url, 30)
    assert counts["c"] == 0, f"drained c got new sessions: {dict(counts)}"
    assert counts["a"] > 0 and counts["b"] > 0, f"{strategy}: {dict(counts)}"
    assert reps[2].requests_of("tools/call", "whoami") == 0


def test_weighted_shares_follow_weights(fleet):
    reps = [fleet.loadgen("a"), fleet.loadgen("b")]
    proxy = fleet.proxy(config(reps, strategy="weighted", weights={"a": 1, "b": 3}))
    counts = new_sessions_on(proxy.url, 80)
    share_b = counts["b"] / 80
    assert 0.6 <= share_b <= 0.9, f"weight 3 of 4 should get ~75% of new sessions: {dict(counts)}"


# ---------------------------------------------------------------------------------------------
# 4. Portable sessions: a restarted proxy with the same key continues a session; tampered -> 404


def _flip(sid: str, at: int) -> str:
    ch = sid[at]
    repl = "A" if ch != "A" else "B"
    return sid[:at] + repl + sid[at + 1:]


@pytest.mark.parametrize("key_from", ["config", "env"])
def test_session_survives_proxy_restart(fleet, key_from):
    reps = [fleet.everything("r0"), fleet.everything("r1")]
    key = new_key()
    port = harness.free_port()
    listen = f"127.0.0.1:{port}"
    if key_from == "config":
        cfg, env = config(reps, key=key), None
    else:
        cfg, env = config(reps), {"MCP_PROXY_SESSION_KEY": key}
    proxy = fleet.proxy(cfg, listen=listen, env=env)
    url = proxy.url
    assert proxy.port == port

    sid = raw_initialize(url)
    assert call_ok(url, sid, "ev__echo", {"message": "before"}) == "Echo: before"
    replica_before = everything_replica(url, sid)

    proxy.kill()  # SIGKILL: nothing is handed over, only the client's session id survives
    proxy2 = fleet.proxy(cfg, listen=listen, env=env)
    assert proxy2.url == url

    # No initialize: the old session id goes straight into a tools/call.
    r, answer = raw_call_tool(url, sid, "ev__echo", {"message": "after restart"})
    assert r.status == 200, f"HTTP {r.status} {r.body[:300]!r}"
    assert answer and "result" in answer and tool_text(answer["result"]) == "Echo: after restart", answer
    new_sid = r.header("mcp-session-id")
    assert new_sid in (None, sid), f"the proxy handed out another session id: {new_sid!r}"
    assert call_ok(url, sid, "ev__get-sum", {"a": 2, "b": 3}) == "The sum of 2 and 3 is 5."
    r = raw_request(url, body=rpc("tools/list"), session=sid)
    assert r.status == 200 and any(t["name"] == "ev__echo" for t in r.messages[0]["result"]["tools"]), r.body[:300]
    # The sealed token restores the binding: the same replica serves the session.
    assert everything_replica(url, sid) == replica_before


def test_tampered_or_foreign_session_id_is_404(fleet):
    reps = [fleet.everything("r0")]
    key = new_key()
    proxy = fleet.proxy(config(reps, key=key))
    url = proxy.url
    sid = raw_initialize(url)
    call_ok(url, sid, "ev__echo", {"message": "genuine"})

    for at in (0, len(sid) // 2, len(sid) - 1):
        bad = _flip(sid, at)
        assert bad != sid
        r, _ = raw_call_tool(url, bad, "ev__echo", {"message": "tampered"})
        assert r.status == 404, f"flipped char {at}: HTTP {r.status} {r.body[:200]!r}"
    r, _ = raw_call_tool(url, "not-a-token", "ev__echo", {"message": "garbage"})
    assert r.status == 404, f"garbage id: HTTP {r.status}"
    # The genuine id still works.
    assert call_ok(url, sid, "ev__echo", {"message": "still"}) == "Echo: still"

    # A proxy with another key does not accept it.
    other = fleet.proxy(config(reps, key=new_key()))
    r, _ = raw_call_tool(other.url, sid, "ev__echo", {"message": "foreign"})
    assert r.status == 404, f"foreign token: HTTP {r.status} {r.body[:200]!r}"


# ---------------------------------------------------------------------------------------------
# 5. Safe retries


def _error_text(r, answer) -> str:
    if answer is None:
        return f"HTTP {r.status} {r.body[:500]!r}"
    if "error" in answer:
        return json.dumps(answer["error"])
    return tool_text(answer["result"])


def test_unannotated_tool_not_retried_after_request_written(fleet):
    # Every replica dies on reading a call of get-sum (no annotations in mcp-loadgen's tool list),
    # so a wrong retry would show up as a second get-sum in another replica's log.
    reps = [fleet.loadgen(f"r{i}", "--crash-on", "get-sum") for i in range(3)]
    proxy = fleet.proxy(config(reps, interval="1s", threshold=3))
    url = proxy.url
    sid = raw_initialize(url)
    first = whoami(url, sid)

    req = rpc("tools/call", {"name": "ev__get-sum", "arguments": {"a": 1, "b": 2}})
    r = raw_request(url, body=req, session=sid, timeout=30)
    time.sleep(0.5)  # let a (wrong) retry land before counting
    reached = {x.name: x.requests_of("tools/call", "get-sum") for x in reps}
    assert sum(reached.values()) == 1, f"get-sum reached upstreams {reached}: exactly one attempt expected"
    assert reached[first] == 1, f"the call went to {reached}, the session was bound to {first}"
    dead = [x.name for x in reps if x.child.proc.poll() is not None]
    assert dead == [first], f"dead replicas: {dead}"

    answers = [m for m in r.messages if m.get("id") == req["id"]]
    assert r.status == 200 and len(answers) == 1, f"one answer expected: HTTP {r.status} {r.messages or r.body[:300]!r}"
    answer = answers[0]
    is_error = "error" in answer or answer.get("result", {}).get("isError")
    assert is_error, f"the client got a success for a call that never completed: {answer}"
    text = _error_text(r, answer)
    assert re.search(r"(?<![A-Za-z])ev(?![a-z])", text), f"the error does not name the server ev: {text}"

    # The session carries on, on another replica (a new upstream session).
    assert whoami(url, sid) != first


def test_read_only_tool_retried_after_request_written(fleet):
    # r0 dies on reading a call of whoami (readOnlyHint + idempotentHint): the proxy may retry it.
    reps = [fleet.loadgen("r0", "--crash-on", "whoami"), fleet.loadgen("r1"), fleet.loadgen("r2")]
    r0 = reps[0]
    proxy = fleet.proxy(config(reps, strategy="round_robin", interval="1s", threshold=3), shards=1)
    url = proxy.url
    served = []
    for _ in range(12):
        sid = raw_initialize(url)
        served.append(whoami(url, sid))  # must succeed even when it went to r0 first
        if r0.requests_of("tools/call", "whoami"):
            break
    assert r0.requests_of("tools/call", "whoami") == 1, f"no session was sent to r0 (served by {served})"
    assert r0.child.proc.wait(5) == 3
    assert "r0" not in served
    assert served[-1] in ("r1", "r2")


def test_unannotated_tool_retried_when_replica_refuses(fleet):
    # The bound replica is gone before the call (connection refused): the request never reached
    # an upstream, so even a tool without annotations is sent elsewhere.
    reps = [fleet.loadgen(f"r{i}") for i in range(3)]
    proxy = fleet.proxy(config(reps, interval="60s", threshold=3))
    url = proxy.url
    sid = raw_initialize(url)
    first = whoami(url, sid)
    victim = next(x for x in reps if x.name == first)
    victim.kill()
    time.sleep(0.5)
    assert call_ok(url, sid, "ev__get-sum", {"a": 1, "b": 2}) == "The sum of 1 and 2 is 3."
    reached = {x.name: x.requests_of("tools/call", "get-sum") for x in reps}
    assert reached[first] == 0 and sum(reached.values()) == 1, reached
    assert whoami(url, sid) != first
