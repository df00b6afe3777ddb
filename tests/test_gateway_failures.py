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

One shard, so the one circuit the admin API shows is the one that routes the calls; health
checks are far apart (60 s) in the 503 test so only the client traffic opens the circuit.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

import harness
from harness import raw_call_tool, raw_initialize, tool_text
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
