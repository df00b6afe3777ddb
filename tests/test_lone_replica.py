"""A server with one replica is tried whenever it may be up: the balancer's panic rule.

When too few of a server's replicas are available (healthy and not ejected: under half of those
not draining, as Envoy's default panic threshold), the proxy picks among all its non-draining
replicas rather than refusing the call. With one replica, that means a replica the circuit took
out is still tried: a call that reaches it when it answers again succeeds, one that does not gets
the replica's own failure rather than "no replica is available". A replica that asked for a pause
(`Retry-After`) is still left alone (tests/test_gateway_failures.py).

And what takes a replica out: the proxy's own background exchanges (GET stream reconnects,
sessions re-opened for subscriptions) never do, and a client request that timed out while the
replica answered other exchanges says the request was slow, not that the replica is down.

- A real server-everything, the one replica of its server, killed and started again on its port
  five times in a row: right after each restart (once its port accepts) a call through an
  existing SDK session, one through an existing raw session and one through a new session
  all succeed.
- `mcp-loadgen upstream` (JSON answers, so a stalled call gets no response head) whose `slow`
  tool outlasts the server's `timeout`: 200 calls of it each get the timeout (none is refused),
  the replica is never ejected (its health checks answer meanwhile), and a normal call succeeds.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import anyio
from mcp.shared.exceptions import MCPError

import harness
from harness import raw_call_tool, raw_initialize, sdk_session, text_of, tool_text
from test_admin import TOKEN
from test_replicas import fleet  # noqa: F401 (a fixture)

RESTARTS = 5


def replicas(proxy: harness.Proxy, server: str) -> list[dict]:
    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers/{server}/replicas",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["replicas"]


def proxy_log(proxy: harness.Proxy) -> str:
    try:
        return proxy.child.stderr_path.read_text(errors="replace")
    except OSError:
        return ""


def raw_echo(url: str, sid: str, message: str) -> str:
    """One echo call in session `sid`; the text answered, or the error, for the assertion."""
    r, answer = raw_call_tool(url, sid, "ev__echo", {"message": message}, timeout=30)
    if r.status != 200 or answer is None:
        return f"HTTP {r.status}: {r.body[:300]!r}"
    if "error" in answer:
        return f"error: {answer['error']}"
    return tool_text(answer["result"])


def test_a_lone_replica_restarted_five_times_answers_the_next_call_each_time(spawner):
    ev = spawner.everything()
    config = (f'[proxy]\nadmin_token = "{TOKEN}"\n\n'
              f'[[servers]]\nname = "ev"\nurl = "{ev.url}"\ntimeout = "10s"\n')
    proxy = spawner.proxy(config, shards=2)
    raw_sid = raw_initialize(proxy.url)
    assert raw_echo(proxy.url, raw_sid, "first") == "Echo: first"

    async def go():
        nonlocal ev
        failures = []
        with anyio.fail_after(240):
            async with sdk_session(proxy.url) as s:
                assert text_of(await s.call_tool("ev__echo", {"message": "hi"})) == "Echo: hi"
                for n in range(RESTARTS):
                    await anyio.to_thread.run_sync(ev.kill)
                    # Started on the same port; returns once the port accepts.
                    ev = await anyio.to_thread.run_sync(spawner.everything, ev.port)
                    # Right away, through the session opened before any restart...
                    try:
                        result = await s.call_tool("ev__echo", {"message": f"sdk {n}"})
                        got = text_of(result)
                    except MCPError as e:
                        got = f"error: {e}"
                    if got != f"Echo: sdk {n}":
                        failures.append((n, "existing SDK session", got))
                    # ...a raw session opened before any restart...
                    got = await anyio.to_thread.run_sync(raw_echo, proxy.url, raw_sid, f"raw {n}")
                    if got != f"Echo: raw {n}":
                        failures.append((n, "existing raw session", got))
                    # ...and a session opened now.
                    try:
                        sid = await anyio.to_thread.run_sync(raw_initialize, proxy.url)
                        got = await anyio.to_thread.run_sync(raw_echo, proxy.url, sid, f"new {n}")
                    except AssertionError as e:
                        got = f"initialize failed: {e}"
                    if got != f"Echo: new {n}":
                        failures.append((n, "new session", got))
        return failures

    failures = anyio.run(go)
    assert not failures, f"{len(failures)} calls failed right after a restart: {failures}"


def panic_picks(proxy: harness.Proxy) -> float:
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(r'^mcp_proxy_balancer_panic_picks_total\{server="ev"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_lone_replica_taken_out_while_down_is_tried_again_and_says_so(spawner):
    """Calls made while the one replica is down fail and take it out; each still gets the
    replica's own failure (not a refusal), the first call once it is back succeeds, and the
    proxy logs and counts its panic."""
    ev = spawner.everything()
    config = (f'[proxy]\nadmin_token = "{TOKEN}"\n\n'
              f'[[servers]]\nname = "ev"\nurl = "{ev.url}"\ntimeout = "10s"\n'
              'health_check_interval = "60s"\nfailover_threshold = 3\n')
    proxy = spawner.proxy(config, shards=1)
    sid = raw_initialize(proxy.url)
    assert raw_echo(proxy.url, sid, "up") == "Echo: up"
    ev.kill()
    down = [raw_echo(proxy.url, sid, f"down {n}") for n in range(5)]
    # Each gets the replica's own failure: the connection refused, not a refusal of the proxy's.
    assert all(re.search(r"cannot connect to upstream ev at 127\.0\.0\.1:\d+", d) for d in down), down
    [replica] = replicas(proxy, "ev")
    assert replica["ejected"], replica
    ev = spawner.everything(ev.port)
    assert raw_echo(proxy.url, sid, "back") == "Echo: back"
    [replica] = replicas(proxy, "ev")
    assert not replica["ejected"], replica
    log = proxy_log(proxy)
    assert "upstream ev: balancer in panic" in log, log[-3000:]
    assert "upstream ev: balancer out of panic" in log, log[-3000:]
    deadline = time.monotonic() + 10
    while panic_picks(proxy) < 1:
        assert time.monotonic() < deadline, "mcp_proxy_balancer_panic_picks_total stayed at 0"
        time.sleep(0.5)


def test_timed_out_calls_of_a_slow_tool_do_not_take_out_a_replica_that_answers(spawner, fleet):
    slow = fleet.loadgen("slow")
    config = (f'[proxy]\nadmin_token = "{TOKEN}"\n\n'
              f'[[servers]]\nname = "ev"\nurl = "{slow.url}"\ntimeout = "1s"\n'
              'health_check_interval = "250ms"\nfailover_threshold = 3\n')
    proxy = spawner.proxy(config, shards=1)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(calls: int) -> None:
        sid = raw_initialize(proxy.url)
        for _ in range(calls):
            r, answer = raw_call_tool(proxy.url, sid, "ev__slow", {"ms": 3000}, timeout=30)
            if answer is None:
                outcome = f"HTTP {r.status}: {r.body[:200]!r}"
            elif "error" in answer:
                outcome = answer["error"].get("message", "")
            else:
                outcome = "answered: " + tool_text(answer["result"])
            with lock:
                outcomes.append(outcome)

    # 200 calls, 20 at a time: each stalls past the server's 1 s timeout.
    threads = [threading.Thread(target=worker, args=(10,)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 200, f"only {len(outcomes)} calls ended"
    timed_out = [o for o in outcomes if re.search(r"did not answer within", o)]
    others = [o for o in outcomes if o not in timed_out]
    assert not others, f"{len(others)} of 200 calls did not get the timeout, e.g. {others[:3]}"

    # A normal call at once succeeds.
    sid = raw_initialize(proxy.url)
    r, answer = raw_call_tool(proxy.url, sid, "ev__echo", {"message": "still here"}, timeout=30)
    assert answer is not None and "result" in answer, f"HTTP {r.status}: {answer or r.body[:300]!r}"
    assert tool_text(answer["result"]) == "still here" or "still here" in tool_text(answer["result"])
    # Never taken out: the health checks answered while the calls waited.
    [replica] = replicas(proxy, "ev")
    assert not replica["ejected"], replica
    assert "ejected" not in proxy_log(proxy), "the replica was ejected for slow calls"
