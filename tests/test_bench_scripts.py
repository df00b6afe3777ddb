"""The wrk scripts of bench/ count the answers that are not what the benchmark asks for.

bench/echo.lua (stateful) and bench/stateless_echo.lua (2026-07-28) call an echo tool through
the proxy and end with one ECHO_BENCH line; bench/echo_compare.sh and bench/stateless_shards.sh
read its `non200` and `badbody` counts and refuse a run that has any, so a benchmark of error
answers is never reported as a speed. Here each script runs for a second against the proxy
with server-everything behind it, once with the real echo tool (no bad answer) and once with a
tool that does not exist (every answer a JSON-RPC error in a 200, each one counted).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import harness

BENCH = Path(__file__).resolve().parent.parent / "bench"


def echo_bench(script: str, url: str, tool: str, session: str | None = None) -> dict[str, int]:
    env = dict(os.environ, TOOL=tool)
    if session is not None:
        env["SESSION_ID"] = session
    run = subprocess.run(["wrk", "-t1", "-c2", "-d1s", "-s", str(BENCH / script), url],
                         env=env, capture_output=True, text=True, timeout=60)
    line = next((l for l in run.stdout.splitlines() if l.startswith("ECHO_BENCH ")), None)
    assert line is not None, f"no ECHO_BENCH line: {run.stdout[-500:]} {run.stderr[-500:]}"
    return {k: int(float(v)) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def test_the_echo_scripts_count_error_answers(spawner):
    upstream = spawner.everything()
    proxy = spawner.proxy(harness.servers_toml([("everything", upstream.url)]), shards=1)
    session = harness.raw_initialize(proxy.url)
    for script, sid in (("echo.lua", session), ("stateless_echo.lua", None)):
        good = echo_bench(script, proxy.url, "everything__echo", sid)
        assert good["requests"] > 0 and good["non200"] == 0 and good["badbody"] == 0, (script, good)
        bad = echo_bench(script, proxy.url, "nope__echo", sid)
        assert bad["requests"] > 0, (script, bad)
        # wrk's own count may include the few requests still open when it stopped.
        assert bad["badbody"] >= bad["requests"] - 2, (script, bad)
