"""Gateway failures (502/503/504) eject a replica; a 500 does not.

A replica behind a broken load balancer answers every POST at once with HTTP 503: it is
reachable, so connection-level checks alone would keep giving it its share of traffic. The proxy
counts 502, 503 and 504 against the replica's circuit like a refused connection (Envoy's
gateway-failure outlier detection), and shows the status as the replica's last error. A 500 is
the application's answer to one request and leaves the replica in.

- The healthy replica is a real server-everything (`REPLICA_ID=good`, told apart with its
  `get-env` tool); the failing one is `mcp-loadgen upstream --http-error-rate 1` (503 with
  `Retry-After: 1` and a text body to every POST, initialize included; `--log-requests` writes
  `http-error 503` per answer, so the test counts what reached it).
- The 500 replica is `mcp-loadgen upstream --error-rate 1 --error-kind http` (HTTP 500 with a
  JSON-RPC error body to everything but initialize, what a crashing web framework answers).

- `mcpctl top --replicas --once` (table and `--json`) shows the 503 replica's row `ejected` and
  the healthy one `active`.

- A replica that starts failing under a session already open on it
  (`--http-error-after N --retry-after 45`): with two replicas the session's next calls move to
  the other one and the failing one stays out for the 45 s it asked for, past the circuit's own
  5 s; with one replica each call gets a JSON-RPC error and the session stays usable.

One shard, so the one circuit the admin API shows is the one that routes the calls; health
checks are far apart (60 s) in the 503 tests so only the client traffic opens the circuit.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.request

import anyio
import pytest
from mcp.shared.exceptions import MCPError

import harness
from harness import raw_call_tool, raw_initialize, sdk_session, text_of, tool_text
from test_admin import MCPCTL, TOKEN, mcpctl
from test_replicas import fleet  # noqa: F401 (a fixture)


def config(urls: list[str], interval: str) -> str:
    lines = ["[proxy]", f'admin_token = "{TOKEN}"', "", "[[servers]]", 'name = "ev"', "replicas = ["]
    lines += [f'  {{ url = "{u}" }},' for u in urls]
    lines += ["]", 'strategy = "round_robin"', f'health_check_interval = "{interval}"',
              "failover_threshold = 3", 'timeout = "10s"']
    return "\n".join(lines) + "\n"


def replicas(proxy: harness.Proxy) -> list[dict]:
    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers/ev/replicas",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["replicas"]


def http_errors(replica) -> int:
    """Injected front-end failures `replica` answered (needs --log-requests)."""
    return sum(1 for line in replica.stderr().splitlines() if re.search(r"http-error \d+$", line))


def served_by(url: str) -> str:
    """A new session's first call (get-env, read-only): which server-everything answered it.
    Fails the test if the call fails."""
    sid = raw_initialize(url)
    r, answer = raw_call_tool(url, sid, "ev__get-env", {}, timeout=30)
    assert r.status == 200 and answer and "result" in answer, f"HTTP {r.status}: {answer or r.body[:300]!r}"
    assert not answer["result"].get("isError"), answer
    return json.loads(tool_text(answer["result"]))["REPLICA_ID"]


def echo(url: str, sid: str, message: str):
    r, answer = raw_call_tool(url, sid, "ev__echo", {"message": message}, timeout=30)
    assert r.status == 200 and answer is not None, f"HTTP {r.status} {r.body[:300]!r}"
    return answer


def test_replica_answering_503_is_ejected_and_calls_go_to_the_healthy_one(spawner, fleet):
    good = fleet.everything("good")
    bad = fleet.loadgen("bad", "--http-error-rate", "1", "--http-error-status", "503")
    proxy = spawner.proxy(config([good.url, bad.url], interval="60s"), shards=1)
    url = proxy.url

    # New sessions alternate between the replicas (round robin) until the 503s open bad's
    # circuit. Every call succeeds all along: bad fails the upstream session's set-up, which
    # never carried the client's request, so it is opened on the healthy replica instead.
    served = []
    for _ in range(20):
        served.append(served_by(url))
        by_url = {r["url"]: r for r in replicas(proxy)}
        if by_url[bad.url]["ejected"]:
            break
    assert set(served) == {"good"}, served
    assert http_errors(bad) > 0, "no request reached the failing replica: the test proves nothing"
    by_url = {r["url"]: r for r in replicas(proxy)}
    b, g = by_url[bad.url], by_url[good.url]
    assert b["ejected"] and b["status"] == "ejected", f"503 replica not ejected after {len(served)} sessions: {b}"
    assert b["ejected_for_ms"] > 0, b
    assert "503" in (b["last_error"] or ""), f"last error does not name the 503: {b['last_error']!r}"
    assert "Retry-After" in b["last_error"], b["last_error"]
    assert b["last_error_ago_ms"] is not None, b
    assert not g["ejected"] and g["status"] == "active" and g["last_error"] is None, g

    # mcpctl shows the same, with the reason.
    if MCPCTL.exists():
        r = mcpctl(proxy, "servers", "replicas", "ev")
        assert r.returncode == 0, r.stderr
        assert re.search(r"#1 last error \([\d.]+s ago\): upstream ev answered HTTP 503", r.stdout), r.stdout

    # While it is out, new sessions and their calls all go to the healthy replica. Round robin
    # would send half of them (10) to bad; an ejection that ran out while this runs lets one
    # request through (half-open) and closes again, hence the small allowance.
    before = http_errors(bad)
    after = [served_by(url) for _ in range(20)]
    assert set(after) == {"good"}, after
    assert http_errors(bad) - before <= 2, f"the ejected replica still got traffic: {http_errors(bad) - before} requests"
    sid = raw_initialize(url)
    for i in range(5):
        answer = echo(url, sid, f"after {i}")
        assert tool_text(answer["result"]) == f"Echo: after {i}", answer


def drive_until_ejected(proxy: harness.Proxy, bad_url: str) -> None:
    """New sessions (each calling get-env) until `bad_url`'s circuit is open; every call is
    answered by the healthy replica all along."""
    for _ in range(20):
        assert served_by(proxy.url) == "good"
        if {r["url"]: r for r in replicas(proxy)}[bad_url]["ejected"]:
            return
    raise AssertionError(f"{bad_url} not ejected after 20 sessions: {replicas(proxy)}")


@pytest.mark.skipif(not MCPCTL.exists(), reason="mcpctl not built")
def test_top_shows_an_ejected_replica(spawner, fleet):
    """`mcpctl top --replicas`: the replica answering 503 is shown `ejected` (table and
    `--json`) while the healthy one is `active`."""
    good = fleet.everything("good")
    bad = fleet.loadgen("bad", "--http-error-rate", "1", "--http-error-status", "503")
    proxy = spawner.proxy(config([good.url, bad.url], interval="60s"), shards=1)

    def top_states(*extra: str) -> tuple[dict[str, str], str]:
        """Each replica's state in one `top --once --replicas` frame, by URL, and the output."""
        r = mcpctl(proxy, "top", "--once", "--replicas", "--interval", "0.2", *extra)
        assert r.returncode == 0, r.stderr
        if extra:
            [row] = [s for s in json.loads(r.stdout)["servers"] if s["server"] == "ev"]
            assert "replicas_error" not in row, row
            return {rep["url"]: rep["status"] for rep in row["replicas"]}, r.stdout
        lines = r.stdout.splitlines()
        states = {}
        for url in (good.url, bad.url):
            [line] = [l for l in lines if url in l]
            # "  #N URL HEALTH STATE REQ/S ...": the replica rows are indented under "ev".
            assert line.startswith("  #"), r.stdout
            states[url] = line.split()[3]
        return states, r.stdout

    # An ejection lasts 5 s at first; a frame taken on a slow machine just after it ran out
    # shows the half-open replica as active, so each form gets a few fresh ejections to be
    # seen in, and the proxy is asked whether the replica was still out when it was not.
    for extra in ((), ("--json",)):
        seen = []
        for _ in range(4):
            drive_until_ejected(proxy, bad.url)
            states, out = top_states(*extra)
            seen.append(states)
            if states[bad.url] == "ejected":
                assert states[good.url] == "active", out
                break
            assert states[bad.url] == "active", out
            assert not {r["url"]: r for r in replicas(proxy)}[bad.url]["ejected"], \
                f"top showed {states[bad.url]!r} for a replica the proxy says is ejected:\n{out}"
        else:
            raise AssertionError(f"top {' '.join(extra)} never showed the ejected replica: {seen}")
    assert http_errors(bad) > 0


def test_replica_answering_500_is_not_ejected(spawner, fleet):
    good = fleet.everything("good")
    crashy = fleet.loadgen("crashy", "--error-rate", "1", "--error-kind", "http")
    # Health checks every second: a check answered 500 (or 400) shows the replica alive.
    proxy = spawner.proxy(config([good.url, crashy.url], interval="1s"), shards=1)
    url = proxy.url

    # Round robin: sessions alternate, so half of them are bound to crashy, whose tools all
    # answer 500. Their calls fail, three in a row each, far past failover_threshold = 3.
    sessions = [raw_initialize(url) for _ in range(6)]
    failed, ok = 0, 0
    for sid in sessions:
        for i in range(3):
            answer = echo(url, sid, f"m{i}")
            if "error" in answer or answer["result"].get("isError"):
                text = json.dumps(answer.get("error") or answer["result"])
                assert "500" in text and re.search(r"\bev\b", text), text
                failed += 1
            else:
                assert tool_text(answer["result"]) == f"Echo: m{i}", answer
                ok += 1
    assert failed >= 6 and ok >= 6, (failed, ok)
    # The failing sessions stayed on crashy: a 500 is the application's answer, not a reason
    # to move (each of its sessions' calls reached it).
    assert crashy.requests_of("tools/call", "echo") == failed

    by_url = {r["url"]: r for r in replicas(proxy)}
    c = by_url[crashy.url]
    assert not c["ejected"] and c["status"] == "active" and c["healthy"], c
    assert c["consecutive_failures"] == 0, c
    assert c["errors"] >= failed, c



# ---------------------------------------------------------------------------------------------
# A replica that starts failing under a session already open on it, with Retry-After
#
# `mcp-loadgen upstream --http-error-after N --http-error-rate 1` serves its first N POSTs and
# fails every later one, with `--retry-after` on each 503. The tests open their session and make
# its first calls well within N, then use up the rest of N with POSTs sent straight to the
# replica, so the switch happens at a known point of the test rather than after some time.

PAUSE = 45  # the failing replica's Retry-After, s: far longer than the circuit's own first 5 s
ENOUGH = 60  # POSTs it serves first: discovery, session set-ups and the first calls fit easily
FIRST_EJECTION_MS = 5_000  # how long the circuit keeps a replica out the first time on its own


def start_failing(replica) -> None:
    """POSTs straight to `replica` (started with --http-error-after) until its front end answers
    503; from then on it fails every POST, the proxy's included."""
    for _ in range(ENOUGH + 10):
        r = harness.raw_request(replica.url, body=harness.rpc("ping"))
        if r.status == 503:
            assert r.header("retry-after") == str(PAUSE), r.headers
            return
    raise AssertionError(f"{replica.url} never started answering 503")


async def sdk_whoami(session) -> str:
    """`whoami` through an SDK session: read-only and idempotent, so safe to send again."""
    result = await session.call_tool("ev__whoami", {})
    assert not result.is_error, result
    return text_of(result)


def new_session_whoami(url: str) -> str:
    """A new raw session's first whoami; fails the test if the call fails."""
    sid = raw_initialize(url)
    r, answer = raw_call_tool(url, sid, "ev__whoami", {}, timeout=30)
    assert r.status == 200 and answer and "result" in answer, f"HTTP {r.status}: {answer or r.body[:300]!r}"
    assert not answer["result"].get("isError"), answer
    return tool_text(answer["result"])


def test_open_session_moves_off_a_replica_that_starts_answering_503_and_it_stays_out(spawner, fleet):
    """A client initialized through the proxy, with calls already answered by its replica: the
    replica starts answering 503 with `Retry-After: 45`. The client's next calls still succeed
    (moved to the other replica), the failing one is ejected, and it stays out past the
    circuit's own first ejection (5 s) because it asked for 45 s."""
    good = fleet.loadgen("good")
    bad = fleet.loadgen("bad", "--http-error-rate", "1", "--http-error-after", str(ENOUGH),
                        "--retry-after", str(PAUSE))
    proxy = spawner.proxy(config([good.url, bad.url], interval="60s"), shards=1)

    async def go():
        with anyio.fail_after(150):
            async with contextlib.AsyncExitStack() as stack:
                # Round robin: a session or two until one is bound to bad, a real SDK client
                # whose calls bad answers.
                for _ in range(4):
                    s = await stack.enter_async_context(sdk_session(proxy.url))
                    if await sdk_whoami(s) == "bad":
                        break
                else:
                    raise AssertionError("no session was bound to bad")
                assert await sdk_whoami(s) == "bad"
                assert http_errors(bad) == 0

                await anyio.to_thread.run_sync(start_failing, bad)
                before = http_errors(bad)
                # The next calls all succeed: the first reaches bad, is answered 503 and, being
                # read-only, is sent again on good, where the session lives from then on.
                for _ in range(3):
                    assert await sdk_whoami(s) == "good"
                assert http_errors(bad) > before, "no call reached the failing replica"

                # New sessions are bound to bad in turn and find it failing (their set-up moves
                # them to good) until its circuit opens.
                for _ in range(20):
                    assert await anyio.to_thread.run_sync(new_session_whoami, proxy.url) == "good"
                    if {r["url"]: r for r in replicas(proxy)}[bad.url]["ejected"]:
                        break
                by_url = {r["url"]: r for r in replicas(proxy)}
                b, g = by_url[bad.url], by_url[good.url]
                assert b["ejected"] and b["status"] == "ejected", b
                # Out for what it asked, not the circuit's own 5 s.
                assert b["ejected_for_ms"] > FIRST_EJECTION_MS, b
                assert f"Retry-After: {PAUSE}" in (b["last_error"] or ""), b["last_error"]
                assert not g["ejected"] and g["status"] == "active", g

                # Past the circuit's own first ejection, bad is still out: no request (not even
                # the half-open one) reaches it, and the open session carries on on good.
                await anyio.sleep(FIRST_EJECTION_MS / 1000 + 1)
                errors = http_errors(bad)
                for _ in range(3):
                    assert await sdk_whoami(s) == "good"
                    assert await anyio.to_thread.run_sync(new_session_whoami, proxy.url) == "good"
                assert http_errors(bad) == errors, "the replica was let back in before its Retry-After"
                b = {r["url"]: r for r in replicas(proxy)}[bad.url]
                assert b["ejected"] and b["ejected_for_ms"] > 0, b

    anyio.run(go)

    if MCPCTL.exists():
        r = mcpctl(proxy, "servers", "replicas", "ev")
        assert r.returncode == 0, r.stderr
        assert re.search(rf"#1 last error \([\d.]+s ago\): upstream ev answered HTTP 503 \(Retry-After: {PAUSE}\)",
                         r.stdout), r.stdout


def test_one_replica_starting_to_answer_503_gives_an_open_session_a_clear_error(spawner, fleet):
    """The same with one replica only: nowhere to move, so each call gets a JSON-RPC error that
    names the server and the failure (no hang, no dropped connection), and once the circuit
    opens, one that says no replica is available. The session itself stays usable."""
    only = fleet.loadgen("only", "--http-error-rate", "1", "--http-error-after", str(ENOUGH),
                         "--retry-after", str(PAUSE))
    proxy = spawner.proxy(config([only.url], interval="60s"), shards=1)

    async def go():
        with anyio.fail_after(120):
            async with sdk_session(proxy.url) as s:
                assert await sdk_whoami(s) == "only"
                assert await sdk_whoami(s) == "only"
                await anyio.to_thread.run_sync(start_failing, only)

                messages = []
                for _ in range(5):
                    with pytest.raises(MCPError) as info:
                        await s.call_tool("ev__whoami", {})
                    assert info.value.code == -32000, info.value
                    assert re.search(r"\bev\b", info.value.message), info.value.message
                    messages.append(info.value.message)
                # failover_threshold = 3: three 503s, then the circuit is open.
                for m in messages[:3]:
                    assert "HTTP 503" in m, messages
                for m in messages[3:]:
                    assert "no replica is available" in m, messages
                [o] = replicas(proxy)
                assert o["ejected"] and o["ejected_for_ms"] > FIRST_EJECTION_MS, o
                assert f"Retry-After: {PAUSE}" in (o["last_error"] or ""), o["last_error"]
                # The session is alive: what the proxy answers itself still works.
                tools = await s.list_tools()
                assert "ev__whoami" in {t.name for t in tools.tools}

    anyio.run(go)
