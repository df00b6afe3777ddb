"""Supervised stdio children over their lives: restarts, idleness, crash loops, and the proxy's
own end.

Real peers as in test_stdio.py: @modelcontextprotocol/server-memory and server-everything over
stdio, and tests/fixtures/crashy_stdio.py (a stdlib-only stdio MCP server that can exit at once,
or reports its pid).

What the proxy is held to:
- a child SIGKILLed during a call: the call gets an error naming the server, the child is
  restarted (`started stdio server NAME (pid N)` again) and the next call works;
- a child stays up while the proxy is idle (it is not tied to the thread that spawned it);
- a child that exits at once on every start: after 5 quick crashes the proxy logs
  `stdio server NAME failed`, stops restarting and answers calls to it with an error naming it;
- SIGTERM/SIGINT: in-flight calls finish, children are stopped, exit 0; SIGKILL: children die
  too; no process outlives the proxy (checked by pid).

Cleanup as in test_stdio.py: every proxy started here carries its tag, and every tagged process
and its descendants are SIGKILLed after each test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

import harness
from harness import EVERYTHING_BIN, sdk_session, text_of
from test_stdio import (CLK_TCK, CRASHY, FILESYSTEM_BIN, MEMORY_BIN, PYTHON, alive,  # noqa: F401
                        cmdline, descendants, log_of, proc_stat, procs, started, stdio_toml, tail,
                        wait_until)


async def long_operation(s, out: dict, seconds: int) -> None:
    """Calls everything's long-running operation (one progress step a second) in session `s`;
    `out["long"]` is what came back: ("result", is_error, text) or ("error", code, message)."""
    try:
        r = await s.call_tool("evstdio__trigger-long-running-operation",
                              {"duration": seconds, "steps": seconds},
                              read_timeout_seconds=12 * seconds)
        out["long"] = ("result", r.is_error, text_of(r))
    except MCPError as e:
        out["long"] = ("error", e.code, e.message)

# ---------------------------------------------------------------------------------------------
# 4. a child SIGKILLed during a call


@pytest.mark.timeout(120)
def test_stdio_child_killed_mid_call_is_restarted(procs):
    proxy = procs.proxy(stdio_toml("evstdio", EVERYTHING_BIN, ["stdio"]), shards=2)
    out: dict = {}

    async def go():
        async with sdk_session(proxy.url) as s:
            first = await s.call_tool("evstdio__echo", {"message": "before"})
            assert text_of(first) == "Echo: before"
            pids = [p for _, p in started(log_of(proxy), "evstdio")]
            assert pids, f"no `started stdio server evstdio (pid N)` line:\n{tail(log_of(proxy))}"
            victim = pids[-1]
            out["victim"] = victim
            out["victim_ppid"] = (proc_stat(victim) or {}).get("ppid")
            out["victim_cmd"] = cmdline(victim)
            assert "mcp-server-everything" in out["victim_cmd"], \
                f"logged pid {victim} is not the everything server: {out['victim_cmd']!r}"

            async def long_call():
                await long_operation(s, out, seconds=5)
                out["long_done"] = time.monotonic()

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await anyio.sleep(1.5)
                assert "long" not in out, f"the 5 s call ended early: {out.get('long')}"
                os.kill(victim, signal.SIGKILL)
                out["killed_at"] = time.monotonic()

            # The child comes back with a new pid, and calls work again.
            deadline = time.monotonic() + 15
            after = None
            while time.monotonic() < deadline:
                try:
                    r = await s.call_tool("evstdio__echo", {"message": "after restart"}, read_timeout_seconds=10)
                    if not r.is_error:
                        after = text_of(r)
                        break
                    out.setdefault("retry_errors", []).append(text_of(r))
                except MCPError as e:
                    out.setdefault("retry_errors", []).append(e.message)
                await anyio.sleep(0.5)
            out["after"] = after

    anyio.run(go)
    log = log_of(proxy)
    assert out["victim_ppid"] == proxy.proc.pid, \
        f"logged pid {out['victim']} ({out['victim_cmd']}) is not a child of the proxy (ppid {out['victim_ppid']})"
    kind, *detail = out["long"]
    assert kind == "error", f"the call in flight on the killed child did not get an error: {out['long']}"
    code, message = detail
    assert "evstdio" in message, f"the error does not name the server: {code} {message!r}"
    assert out["long_done"] - out["killed_at"] < 10, \
        f"the error came {out['long_done'] - out['killed_at']:.1f}s after the kill (a timeout, not detection)"
    pids = [p for _, p in started(log, "evstdio")]
    assert len(pids) >= 2 and pids[-1] != out["victim"], f"no restart with a new pid in the log: {pids}\n{tail(log)}"
    assert not alive(out["victim"]), "the killed child still runs?"
    assert out["after"] == "Echo: after restart", \
        f"no successful call within 15 s of the kill; errors: {out.get('retry_errors')}\n{tail(log)}"


# ---------------------------------------------------------------------------------------------
# A child stays up while idle (PR_SET_PDEATHSIG fires when the *thread* that spawned the child
# exits: a child spawned from a short-lived worker thread would be killed behind the proxy's back)


@pytest.mark.timeout(60)
def test_stdio_child_survives_idle_time(procs):
    proxy = procs.proxy(stdio_toml("fx", PYTHON, [CRASHY]), shards=2)

    async def whoami():
        async with sdk_session(proxy.url) as s:
            return json.loads(text_of(await s.call_tool("fx__whoami", {})))

    first = anyio.run(whoami)
    time.sleep(12)
    second = anyio.run(whoami)
    log = log_of(proxy)
    assert first["pid"] == second["pid"], f"the idle child was replaced: {first} -> {second}\n{tail(log)}"
    assert len(started(log, "fx")) == 1, f"restarts while idle:\n{tail(log)}"


# ---------------------------------------------------------------------------------------------
# 5. a child that exits at once on every start


FAILED_RE = r"stdio server [`\"']?flaky[`\"']? failed"


@pytest.mark.timeout(150)
def test_crash_loop_is_bounded_and_reported(procs, tmp_path):
    starts_file = tmp_path / "flaky-starts.txt"
    config = (stdio_toml("flaky", PYTHON, [CRASHY, "--exit-at-once", "1"], env={"CRASHY_STARTS": starts_file})
              + stdio_toml("fx", PYTHON, [CRASHY]))
    proxy = procs.proxy(config, shards=2)
    pid = proxy.proc.pid
    cpu_at_ready = proc_stat(pid)["cpu"]

    def start_times() -> list[float]:
        """When each flaky child started, as the child itself wrote it down."""
        try:
            return [float(line.split()[0]) for line in starts_file.read_text().splitlines() if line.strip()]
        except OSError:
            return []

    def failed_yet() -> bool:
        return bool(re.search(FAILED_RE, log_of(proxy)))

    found = wait_until(failed_yet, 5)
    if not found and not start_times():
        # Maybe children start on first use: ask for one.
        async def poke():
            async with sdk_session(proxy.url) as s:
                try:
                    await s.call_tool("flaky__echo", {"message": "x"}, read_timeout_seconds=10)
                except MCPError:
                    pass

        anyio.run(poke)
    found = found or wait_until(failed_yet, 60)
    log = log_of(proxy)
    times = start_times()
    assert found, f"no `stdio server flaky failed` within ~65 s; {len(times)} starts so far\n{tail(log)}"
    starts = len(times)
    assert 2 <= starts <= 10, f"{starts} starts before `failed` (expected a handful of retries, then give up)"
    assert len(started(log, "flaky")) == starts, \
        f"{starts} starts, but {len(started(log, 'flaky'))} `started stdio server flaky` lines"
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    if len(gaps) >= 2:
        assert gaps[-1] >= 1.5 * max(gaps[0], 0.01), f"no growing backoff between restarts (s): {gaps}"
    # The child's stderr is in the proxy's log under the server's name.
    assert re.search(r"flaky.*crashy_stdio exiting at once", log), tail(log)

    # After `failed`: no more starts, and next to no CPU, for 10 s.
    cpu_before = proc_stat(pid)["cpu"]
    time.sleep(10)
    cpu_after = proc_stat(pid)["cpu"]
    log = log_of(proxy)
    assert len(start_times()) == starts and len(started(log, "flaky")) == starts, \
        f"flaky was started again after `failed`:\n{tail(log)}"
    assert (cpu_after - cpu_before) / CLK_TCK < 1.0, \
        f"the proxy used {(cpu_after - cpu_before) / CLK_TCK:.2f}s of CPU in 10 s after `failed`"
    assert (cpu_after - cpu_at_ready) / CLK_TCK < 3.0, \
        f"the proxy used {(cpu_after - cpu_at_ready) / CLK_TCK:.2f}s of CPU from ready to the end"
    crashy_alive = [p for p in descendants(pid) if "--exit-at-once" in cmdline(p)]
    assert not crashy_alive, f"flaky children still running: {crashy_alive}"

    async def calls():
        async with sdk_session(proxy.url) as s:
            with pytest.raises(MCPError) as info:
                await s.call_tool("flaky__echo", {"message": "anyone?"}, read_timeout_seconds=20)
            ok = await s.call_tool("fx__echo", {"message": "still here"})
            return info.value, ok

    err, ok = anyio.run(calls)
    assert "flaky" in err.message and "fail" in err.message.lower(), \
        f"the error does not name the failed server: {err.code} {err.message!r}"
    assert text_of(ok) == "Echo: still here", "the healthy stdio server broke along with the failed one"


# ---------------------------------------------------------------------------------------------
# 7. no orphans after SIGKILL or SIGTERM of the proxy


def orphan_topology(tmp: Path) -> str:
    (tmp / "fs").mkdir(exist_ok=True)
    return (stdio_toml("memory", MEMORY_BIN, [], env={"MEMORY_FILE_PATH": tmp / "m.jsonl"})
            + stdio_toml("filesystem", FILESYSTEM_BIN, [tmp.resolve() / "fs"])
            + stdio_toml("evstdio", EVERYTHING_BIN, ["stdio"])
            + stdio_toml("fx", PYTHON, [CRASHY]))


ORPHAN_SERVERS = {"memory", "filesystem", "evstdio", "fx"}


def start_all_children(proxy: harness.Proxy) -> dict[int, int]:
    """Use every server once, then return the proxy's descendants (pid -> starttime), checking that
    every logged child is among them."""

    async def go():
        async with sdk_session(proxy.url) as s:
            await s.call_tool("memory__read_graph", {})
            await s.call_tool("filesystem__list_allowed_directories", {})
            await s.call_tool("evstdio__echo", {"message": "x"})
            await s.call_tool("fx__echo", {"message": "x"})

    anyio.run(go)
    log = log_of(proxy)
    logged = {name: pid for name, pid in started(log)}
    assert set(logged) == ORPHAN_SERVERS, f"started lines: {started(log)}\n{tail(log)}"
    tree = descendants(proxy.proc.pid)
    missing = {n: p for n, p in logged.items() if p not in tree}
    assert not missing, f"logged children not found under the proxy: {missing}; tree {tree}"
    return tree


def survivors(tree: dict[int, int]) -> list[str]:
    return [f"{p} {cmdline(p)}" for p, start in tree.items() if alive(p, start)]


@pytest.mark.timeout(90)
def test_no_orphans_after_proxy_sigkill(procs, tmp_path):
    proxy = procs.proxy(orphan_topology(tmp_path), shards=2)
    tree = start_all_children(proxy)
    os.kill(proxy.proc.pid, signal.SIGKILL)  # the proxy alone, not its process group
    proxy.proc.wait(timeout=5)
    gone = wait_until(lambda: not survivors(tree), 5)
    assert gone, f"processes the proxy started outlived its SIGKILL by 5 s: {survivors(tree)}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_no_orphans_and_exit_0_after_graceful_signal(procs, tmp_path, sig):
    proxy = procs.proxy(orphan_topology(tmp_path), shards=2)
    tree = start_all_children(proxy)
    os.kill(proxy.proc.pid, sig)
    try:
        code = proxy.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the proxy still runs 20 s after {sig.name}:\n{proxy.stderr_tail()}")
    assert code == 0, f"exit status {code} after {sig.name}:\n{proxy.stderr_tail()}"
    gone = wait_until(lambda: not survivors(tree), 5)
    assert gone, f"processes the proxy started outlived its {sig.name}: {survivors(tree)}"


@pytest.mark.timeout(90)
def test_sigterm_lets_the_call_in_flight_finish(procs):
    proxy = procs.proxy(stdio_toml("evstdio", EVERYTHING_BIN, ["stdio"]), shards=2)
    out: dict = {}

    async def go():
        # (bounded: a client whose server went away may keep retrying its GET stream)
        with anyio.fail_after(30):
            await session()

    async def session():
        async with sdk_session(proxy.url) as s:
            await s.call_tool("evstdio__echo", {"message": "warm"})

            async def long_call():
                await long_operation(s, out, seconds=2)

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await anyio.sleep(0.7)
                os.kill(proxy.proc.pid, signal.SIGTERM)

    try:
        anyio.run(go)
    except Exception as e:  # the session ending when the proxy leaves is fine; the answer is what counts
        out.setdefault("session_error", repr(e))
    assert out.get("long") == ("result", False, "Long running operation completed. Duration: 2 seconds, Steps: 2."), \
        f"the call in flight at SIGTERM did not finish: {out}\n{proxy.stderr_tail()}"
    try:
        code = proxy.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the proxy still runs 20 s after SIGTERM:\n{proxy.stderr_tail()}")
    assert code == 0, f"exit status {code}:\n{proxy.stderr_tail()}"
