"""Per-replica control: list, show, drain and enable one replica through `mcpctl`.

- Three `mcp-loadgen upstream --id rN --log-requests` replicas of one server: `whoami` answers
  the replica's id and each replica logs the requests it read, so the test sees where every call
  went. Draining replica 1 sends new sessions only to r0 and r2 (its pick count stops moving and
  it reads no call); the drain survives a proxy restart (state_dir); enabling it brings traffic
  back. The per-replica statistics (picks, requests, errors, latency quantiles) add up across
  shards.
- A server added live is health-checked: its upstream killed, `mcpctl health` reports it down
  with no client traffic at all.
- A drained server-everything's resources are refused (resources/read), with a message saying
  it is drained, while the read worked before the drain.
- `mcpctl top --replicas` (two replicas, one drained): rows indented under the server with
  each URL and state, r0's rate moves with calls while the drained r1's stays 0 (`--json`
  frames), and a killed replica shows down with failed probes.
- Only client requests count: after discovery and N calls in N new sessions (each with its
  upstream session set up), the replica shows N requests and N latency samples, and no
  balancer latency before the first call.
- `--json` of the new commands parses; an unknown server, a replica index out of range (the
  message gives the valid range) and a stdio server's replica give clear non-zero exits.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import pytest

import harness
from test_admin import MCPCTL, TOKEN, health_json, mcpctl, ok_json, wait_until
from test_replicas import fleet  # noqa: F401 (a fixture)

IDS = ["r0", "r1", "r2"]


@pytest.fixture
def state_dir():
    with tempfile.TemporaryDirectory(prefix="mcp-proxy-state-") as d:
        yield Path(d)


def fleet_config(urls: list[str], state_dir: Path | None, interval: str = "1s") -> str:
    lines = ["[proxy]", f'admin_token = "{TOKEN}"']
    if state_dir is not None:
        lines.append(f'state_dir = "{state_dir}"')
    lines += ["", "[[servers]]", 'name = "fleet"', "replicas = ["]
    lines += [f'  {{ url = "{u}" }},' for u in urls]
    lines += ["]", f'health_check_interval = "{interval}"', 'timeout = "10s"']
    return "\n".join(lines) + "\n"


def whoami(proxy: harness.Proxy) -> str:
    """One call of `fleet__whoami` in a new MCP session (mcpctl call opens one each time)."""
    r = mcpctl(proxy, "call", "fleet__whoami", "--mcp-url", proxy.url, "--json")
    assert r.returncode == 0, f"call failed ({r.returncode}): {r.stderr}"
    text = "".join(c.get("text", "") for c in json.loads(r.stdout)["content"])
    found = [i for i in IDS if i in text]
    assert len(found) == 1, f"whoami answered {text!r}"
    return found[0]


def replicas(proxy: harness.Proxy) -> list[dict]:
    return ok_json(proxy, "servers", "replicas", "fleet")["replicas"]


def test_drain_one_replica_moves_new_work_survives_a_restart_and_enable_brings_it_back(
        spawner, fleet, state_dir):
    reps = [fleet.loadgen(i) for i in IDS]
    text = fleet_config([r.url for r in reps], state_dir)
    proxy = spawner.proxy(text)
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]},
               what="fleet__whoami listed")

    listed = ok_json(proxy, "servers", "replicas", "fleet")
    assert listed["server"] == "fleet" and listed["shards"] == 2 and listed["shards_missing"] == []
    assert [r["url"] for r in listed["replicas"]] == [r.url for r in reps]
    assert all(r["status"] == "active" and r["drain"] is False for r in listed["replicas"])

    # Traffic before the drain, so the statistics have something to add up.
    for _ in range(6):
        whoami(proxy)
    before = replicas(proxy)
    assert sum(r["picks"] for r in before) >= 6
    called = [r for r in before if r["latency_us"]["count"] > 0]
    assert called and all(r["latency_us"]["p50"] > 0 and r["latency_us"]["p99"] >= r["latency_us"]["p50"]
                          for r in called)
    assert all(r["errors"] == 0 for r in before)

    drained = ok_json(proxy, "servers", "drain", "fleet", "--replica", "1")
    assert drained["replica"]["index"] == 1
    assert drained["replica"]["drain"] is True and drained["replica"]["drained_by"] == "api"
    assert drained["replica"]["status"] == "drained"
    picks_r1 = next(r for r in replicas(proxy) if r["index"] == 1)["picks"]
    calls_r1 = reps[1].requests_of("tools/call", "whoami")

    answered = [whoami(proxy) for _ in range(12)]
    assert "r1" not in answered, answered
    assert set(answered) <= {"r0", "r2"}
    after = {r["index"]: r for r in replicas(proxy)}
    assert after[1]["picks"] == picks_r1, "a drained replica was picked for new work"
    assert reps[1].requests_of("tools/call", "whoami") == calls_r1
    assert after[0]["picks"] + after[2]["picks"] >= 12

    # The drain is saved: a restarted proxy keeps replica 1 out.
    proxy.kill()
    again = spawner.proxy(text)
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(again, "tools", "ls")["items"]},
               what="fleet__whoami after restart")
    shown = ok_json(again, "servers", "replicas", "fleet", "1")["replica"]
    assert shown["drain"] is True and shown["drained_by"] == "api"
    answered = [whoami(again) for _ in range(8)]
    assert "r1" not in answered, answered
    assert reps[1].requests_of("tools/call", "whoami") == calls_r1

    enabled = ok_json(again, "servers", "enable", "fleet", "--replica", "1")
    assert enabled["replica"]["drain"] is False and enabled["replica"]["status"] == "active"
    # Ties are broken at random among three equal replicas: 60 calls all missing r1 would
    # happen with probability (2/3)^60, about 3e-11.
    for _ in range(60):
        if whoami(again) == "r1":
            break
    else:
        raise AssertionError("an enabled replica never took a new session")
    assert reps[1].requests_of("tools/call", "whoami") > calls_r1
    # The table form names the states.
    table = mcpctl(again, "servers", "replicas", "fleet")
    assert table.returncode == 0 and "r1" not in table.stderr
    assert all(r.url in table.stdout for r in reps)


def test_a_session_bound_to_a_drained_replica_finishes_there(spawner, fleet, state_dir):
    """The documented drain semantics: no new work, but a session already talking to the
    replica keeps its upstream session there until it ends."""
    reps = [fleet.loadgen(i) for i in IDS]
    proxy = spawner.proxy(fleet_config([r.url for r in reps], state_dir))
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]},
               what="fleet__whoami listed")

    def session_whoami(sid: str) -> str:
        _, answer = harness.raw_call_tool(proxy.url, sid, "fleet__whoami", {})
        assert answer is not None and "result" in answer, answer
        return harness.tool_text(answer["result"])

    # Sessions bind at random among equal replicas; (2/3)^40 is the chance none lands on r1.
    bound = None
    for _ in range(40):
        sid = harness.raw_initialize(proxy.url)
        if "r1" in session_whoami(sid):
            bound = sid
            break
    assert bound is not None, "no session was bound to r1"
    assert mcpctl(proxy, "servers", "drain", "fleet", "--replica", "1").returncode == 0
    for _ in range(3):
        assert "r1" in session_whoami(bound), "a bound session left a drained (healthy) replica"
    fresh = harness.raw_initialize(proxy.url)
    assert "r1" not in session_whoami(fresh)


def test_replica_errors_say_what_exists_and_json_parses(spawner, fleet, state_dir):
    reps = [fleet.loadgen(i) for i in IDS]
    proxy = spawner.proxy(fleet_config([r.url for r in reps], state_dir))

    r = mcpctl(proxy, "servers", "replicas", "nope")
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "fleet" in r.stderr and "nope" in r.stderr

    for args in (("servers", "drain", "fleet", "--replica", "7"),
                 ("servers", "enable", "fleet", "--replica", "3"),
                 ("servers", "replicas", "fleet", "9")):
        r = mcpctl(proxy, *args)
        assert r.returncode == 5, (args, r.returncode, r.stderr)
        assert "valid replicas are 0 to 2" in r.stderr, r.stderr

    r = mcpctl(proxy, "servers", "drain", "nope", "--replica", "0")
    assert r.returncode == 5 and "known servers: fleet" in r.stderr, r.stderr

    # The API refuses a non-number index and wrong methods clearly.
    def api(method: str, path: str) -> tuple[int, dict]:
        req = urllib.request.Request(f"{proxy.admin_url}/api/v1/{path}", method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = api("GET", "servers/fleet/replicas/one")
    assert status == 400 and "0 to 2" in body["error"], body
    status, body = api("GET", "servers/fleet/replicas/0/drain")
    assert status == 405 and body["kind"] == "method", body
    status, body = api("GET", "servers/fleet/replicas/0")
    assert status == 200 and body["replica"]["index"] == 0
    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers/fleet/replicas")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("no token was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 401

    # Every new command's --json is one JSON document.
    for args in (("servers", "replicas", "fleet"), ("servers", "replicas", "fleet", "2"),
                 ("servers", "drain", "fleet", "--replica", "2"),
                 ("servers", "enable", "fleet", "--replica", "2")):
        doc = ok_json(proxy, *args)
        assert doc["server"] == "fleet", (args, doc)

    # A stdio server's children are not balanced: draining one is refused, saying what to do.
    r = mcpctl(proxy, "servers", "add", "kid", "--command", "cat")
    assert r.returncode == 0, r.stderr
    r = mcpctl(proxy, "servers", "drain", "kid", "--replica", "0")
    assert r.returncode == 2 and "stdio" in r.stderr and "servers drain kid" in r.stderr, r.stderr


def test_a_server_added_live_is_health_checked(spawner, fleet, state_dir):
    base = fleet.loadgen("r0")
    extra = fleet.loadgen("r1")
    proxy = spawner.proxy(fleet_config([base.url], state_dir))
    spec = json.dumps({"health_check_interval": "200ms", "failover_threshold": 1})
    r = mcpctl(proxy, "servers", "add", "extra", "--url", extra.url, "--spec", spec)
    assert r.returncode == 0, r.stderr

    def health() -> dict:
        return health_json(proxy)["servers"]["extra"]

    wait_until(lambda: health()["status"] == "up", what="extra discovered")
    assert health()["replicas"] == {"healthy": 1, "total": 1}
    calls_before = extra.requests_of("tools/call")
    extra.kill()
    # Nobody calls it: only the active checks can notice.
    wait_until(lambda: health()["status"] == "down", what="extra seen down by its health checks")
    assert "health checks" in health()["error"]
    assert health_json(proxy)["status"] == "degraded"
    shown = ok_json(proxy, "servers", "replicas", "extra", "0")["replica"]
    assert shown["healthy"] is False and shown["status"] == "unhealthy"
    assert extra.requests_of("tools/call") == calls_before
    # Back on the same port, the checks bring it back.
    fleet.restart(extra)
    wait_until(lambda: health()["status"] == "up", what="extra healthy again")
    assert mcpctl(proxy, "servers", "rm", "extra").returncode == 0
    assert "extra" not in health_json(proxy)["servers"]


def test_a_drained_server_takes_no_resource_reads(spawner):
    alpha = spawner.everything()
    config = f'[proxy]\nadmin_token = "{TOKEN}"\n\n' + harness.servers_toml({"alpha": alpha.url})
    proxy = spawner.proxy(config)

    async def scenario() -> None:
        async with harness.sdk_session(proxy.url) as session:
            listed = await session.list_resources()
            uris = [str(r.uri) for r in listed.resources if str(r.uri).startswith("alpha+")]
            assert uris, listed
            uri = uris[0]
            before = await session.read_resource(uri)
            assert before.contents
            r = await anyio.to_thread.run_sync(lambda: mcpctl(proxy, "servers", "drain", "alpha"))
            assert r.returncode == 0, r.stderr
            with anyio.fail_after(15):
                while any(str(x.uri).startswith("alpha+")
                          for x in (await session.list_resources()).resources):
                    await anyio.sleep(0.1)
            with pytest.raises(Exception) as refused:
                await session.read_resource(uri)
            message = str(refused.value)
            assert "drained" in message and "servers enable alpha" in message, message
            r = await anyio.to_thread.run_sync(lambda: mcpctl(proxy, "servers", "enable", "alpha"))
            assert r.returncode == 0, r.stderr
            with anyio.fail_after(15):
                while True:
                    try:
                        again = await session.read_resource(uri)
                        break
                    except Exception:
                        await anyio.sleep(0.1)
            assert again.contents

    anyio.run(scenario)


def probe_counts(proxy: harness.Proxy, url: str) -> dict[str, float]:
    """`mcp_proxy_health_probes_total` of replica `url`, by outcome, from /metrics."""
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mcp_proxy_health_probes_total{") and f'replica="{url}"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_health_checks_are_not_counted_as_requests(spawner, fleet, state_dir):
    """A replica nobody calls shows health checks and no requests; N calls show N requests
    (and N latency samples, in the admin API and the fleet view alike); health checks that
    fail are probe errors, not request errors, and still mark the replica unhealthy."""
    [rep] = [fleet.loadgen("r0")]
    proxy = spawner.proxy(fleet_config([rep.url], state_dir, interval="200ms"))
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]},
               what="fleet__whoami listed")

    # No client traffic: the replica is pinged by both shards, and that is all.
    wait_until(lambda: replicas(proxy)[0]["probes"] >= 6, what="a few rounds of health checks")
    wait_until(lambda: rep.requests_of("ping") >= 6, what="the pings reaching the replica")
    idle = replicas(proxy)[0]
    assert idle["requests"] == 0 and idle["errors"] == 0, idle
    assert idle["latency_us"]["count"] == 0 and idle["inflight"] == 0, idle
    assert idle["probe_errors"] == 0, idle
    assert probe_counts(proxy, rep.url).get("ok", 0) >= 6
    assert rep.requests_of("tools/call") == 0

    n = 5
    for _ in range(n):
        assert whoami(proxy) == "r0"
    busy = replicas(proxy)[0]
    assert busy["requests"] == n and busy["errors"] == 0, busy
    assert busy["latency_us"]["count"] == n, busy
    assert busy["probes"] >= idle["probes"]
    assert rep.requests_of("tools/call", "whoami") == n
    # The fleet view reads the same per-replica latencies: n answered, n samples.
    sid = harness.raw_initialize(proxy.url)
    req = harness.rpc("tools/call", {"name": "proxy__balance_load", "arguments": {"server": "fleet"}})
    answer = harness.raw_request(proxy.url, body=req, session=sid).response_for(req["id"])
    assert answer and "result" in answer, answer
    [view] = answer["result"]["structuredContent"]["servers"]
    [replica] = view["replicas"]
    assert replica["answered"] == n and replica["latency"]["count"] == n, replica

    # The replica dies: its health checks fail, which is not a failed request.
    rep.kill()
    wait_until(lambda: replicas(proxy)[0]["probe_errors"] >= 6, what="failed health checks")
    down = replicas(proxy)[0]
    assert down["requests"] == n and down["errors"] == 0, down
    assert down["latency_us"]["count"] == n, down
    assert probe_counts(proxy, rep.url).get("unavailable", 0) > 0
    # Health still follows the checks.
    wait_until(lambda: replicas(proxy)[0]["healthy"] is False, what="the dead replica marked unhealthy")
    table = mcpctl(proxy, "servers", "replicas", "fleet")
    assert table.returncode == 0 and "PROBES" in table.stdout and "failed)" in table.stdout, table.stdout


def test_only_client_requests_are_requests_and_latency_samples(spawner, fleet, state_dir):
    """The proxy's own exchanges with a replica (discovery's upstream session and lists, each
    client session's upstream `initialize` and `notifications/initialized`, GET streams,
    DELETEs) are not client work: before any call the replica has no balancer latency (it
    costs its peers' average, not an `initialize`'s time), and after N calls it counts exactly
    N requests and N latency samples, though it read many more messages than that."""
    rep = fleet.loadgen("r0")
    proxy = spawner.proxy(fleet_config([rep.url], state_dir, interval="60s"))
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]},
               what="fleet__whoami listed")
    # Discovery opened a session on the replica and listed it: real exchanges, no client's.
    assert rep.requests_of("initialize") >= 1 and rep.requests_of("tools/list") >= 1
    idle = replicas(proxy)[0]
    assert idle["ewma_ms"] is None, f"set-up and discovery fed the balancer's latency: {idle}"
    assert idle["requests"] == 0 and idle["latency_us"]["count"] == 0, idle
    assert idle["inflight"] == 0 and idle["errors"] == 0, idle

    n = 5
    initialized_before = rep.requests_of("initialize")
    for _ in range(n):
        assert whoami(proxy) == "r0"
    busy = replicas(proxy)[0]
    # Each call came in a new session: its upstream session was set up first, and none of
    # that is a request.
    assert rep.requests_of("initialize") - initialized_before >= n
    assert rep.requests_of("tools/call", "whoami") == n
    assert busy["requests"] == n and busy["errors"] == 0, busy
    assert busy["latency_us"]["count"] == n, busy
    assert busy["ewma_ms"] is not None and busy["ewma_ms"] > 0, busy
    assert busy["inflight"] == 0, busy


def test_top_shows_each_replica_its_state_and_rate(spawner, fleet, state_dir):
    """`mcpctl top --replicas`: a two-replica server's replicas indented under it, each with
    its URL and state; the drained one takes no requests, the other one's rate moves, and a
    killed one shows as down with failed health checks."""
    reps = [fleet.loadgen(i) for i in IDS[:2]]
    proxy = spawner.proxy(fleet_config([r.url for r in reps], state_dir))
    wait_until(lambda: "fleet__whoami" in {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]},
               what="fleet__whoami listed")
    # A stdio server has no replicas: no rows and no failure marker for it.
    assert mcpctl(proxy, "servers", "add", "kid", "--command", "cat").returncode == 0
    assert mcpctl(proxy, "servers", "drain", "fleet", "--replica", "1").returncode == 0

    table = mcpctl(proxy, "top", "--once", "--replicas", "--interval", "0.3")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "INFLIGHT" in lines[0] and "PROBES" in lines[0], table.stdout
    fleet_at = next(i for i, l in enumerate(lines) if l.startswith("fleet "))
    r0 = next(l for l in lines if reps[0].url in l)
    r1 = next(l for l in lines if reps[1].url in l)
    assert lines[fleet_at + 1] == r0 and lines[fleet_at + 2] == r1, table.stdout
    assert r0.startswith("  #0 ") and r1.startswith("  #1 "), table.stdout
    assert r0.split()[3] == "active" and r1.split()[3] == "drained", table.stdout
    assert "unavailable" not in table.stdout and "kid" in table.stdout, table.stdout

    # Without --replicas the table is the per-server one.
    plain = mcpctl(proxy, "top", "--once", "--interval", "0.3")
    assert plain.returncode == 0 and reps[0].url not in plain.stdout, plain.stdout

    # --json frames, streamed: calls made meanwhile show up as r0's rate, never r1's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env |= {"MCPCTL_URL": proxy.admin_url, "MCPCTL_TOKEN": TOKEN}
    top = subprocess.Popen([str(MCPCTL), "top", "--replicas", "--json", "--interval", "0.5"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def fleet_row() -> dict:
            line = top.stdout.readline()
            assert line, f"top ended: {top.stderr.read() if top.poll() is not None else ''}"
            frame = json.loads(line)
            assert frame["replicas"] is True
            row = next(s for s in frame["servers"] if s["server"] == "fleet")
            assert "replicas_error" not in row, row
            return row

        first = fleet_row()
        assert [r["url"] for r in first["replicas"]] == [r.url for r in reps]
        assert [r["status"] for r in first["replicas"]] == ["active", "drained"]
        assert all(r["drain"] is (r["index"] == 1) for r in first["replicas"])
        answered = [whoami(proxy) for _ in range(4)]
        assert answered == ["r0"] * 4, answered
        # The calls land in some frame after the first; each frame is 0.5 s of counts.
        rates = []
        for _ in range(40):
            row = fleet_row()
            rates.append([r["rate"] for r in row["replicas"]])
            if row["replicas"][0]["requests"] >= first["replicas"][0]["requests"] + 4 and \
                    sum(r[0] for r in rates) > 0:
                break
        assert sum(r[0] for r in rates) > 0, rates
        assert all(r[1] == 0 for r in rates), rates
        last = row["replicas"]
        assert last[1]["requests"] == first["replicas"][1]["requests"]
        assert all(r["errors"] == 0 and r["probe_errors"] == 0 and isinstance(r["probes"], int)
                   for r in last)
        assert last[0]["p50_us"] > 0 and last[0]["p99_us"] >= last[0]["p50_us"]
    finally:
        top.kill()
        top.wait(5)

    # A replica that dies is shown failing its health checks, the other rows unchanged.
    reps[0].kill()

    def r0_failing() -> bool:
        row = next(s for s in ok_json(proxy, "top", "--once", "--replicas", "--interval", "0.2")["servers"]
                   if s["server"] == "fleet")
        r0 = row["replicas"][0]
        return r0["status"] in ("unhealthy", "ejected") and r0["probe_errors"] > 0
    wait_until(r0_failing, timeout=30, what="top shows the dead replica failing its checks")
    table = mcpctl(proxy, "top", "--once", "--replicas", "--interval", "0.2")
    assert table.returncode == 0, table.stderr
    r0 = next(l for l in table.stdout.splitlines() if reps[0].url in l)
    r1 = next(l for l in table.stdout.splitlines() if reps[1].url in l)
    assert r0.split()[2] == "down" and "failed)" in r0, table.stdout
    assert r1.split()[3] == "drained", table.stdout
