"""Fleet orchestration: the proxy's fleet tools on live figures, saved workflows
through the admin API and mcpctl, and cancellation reaching upstream servers.

Upstreams are real where behaviour is the point (server-everything, server-memory) and
`mcp-loadgen upstream` where a fault is injected: `--latency` makes one replica slow, killing one
makes it fail, `--log-requests` shows what reached it (requests, and notifications with the
requestId they name).

What is held here:
- monitor_health shows a killed replica as failing while its peer stays healthy;
- balance_load shows picks on every replica after calls; with [proxy] allow_fleet_changes a new
  strategy and weights take effect (new sessions follow the weights, a session opened before
  keeps working, the change is saved in state_dir); without the flag the change is refused with
  a message naming it;
- optimize_performance flags the replica made slow by --latency, and only that one;
- saved workflows: mcpctl workflows put/ls/show/run/rm with --json, a bad workflow is refused
  naming the field, they survive a restart, and runs started on every shard are listed;
- without a state_dir a workflow saved through the admin API runs on every shard;
- cancelling a workflow run whose step is in flight sends notifications/cancelled upstream.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness import NODE_BIN, raw_initialize, raw_request, rpc, tool_text
from test_orchestration import read_resource
from test_replicas import LOADGEN_BIN, LOADGEN_READY, Replica

MCPCTL = Path(os.environ.get("MCPCTL_BIN", harness.PROXY_BIN.parent / "mcpctl"))
MEMORY_BIN = NODE_BIN / "mcp-server-memory"
TOKEN = "fleet-test-token-0123456789abcdef"


class Procs:
    """Upstreams and proxies of one test; all killed at teardown whatever the outcome."""

    def __init__(self) -> None:
        self.children: list = []

    def loadgen(self, name: str, *args: str) -> Replica:
        if not LOADGEN_BIN.exists():
            raise RuntimeError(f"{LOADGEN_BIN} missing: cargo build --release -p mcp-loadgen")
        port = harness.free_port()
        argv = [LOADGEN_BIN, "upstream", "--listen", f"127.0.0.1:{port}", "--id", name, "--log-requests", *args]
        child = harness.spawn(f"loadgen-{name}", argv, stdout=subprocess.PIPE)
        self.children.append(child)
        harness.wait_line(child, LOADGEN_READY, 10.0)
        return Replica(name, child, port, argv, {})

    def everything(self) -> harness.Upstream:
        u = harness.start_everything_http()
        self.children.append(u)
        return u

    def proxy(self, config: str, shards: int = 2) -> harness.Proxy:
        p = harness.start_proxy(config, shards=shards)
        self.children.append(p)
        return p

    def close(self) -> None:
        for c in reversed(self.children):
            c.kill()


@pytest.fixture
def procs():
    p = Procs()
    try:
        yield p
    finally:
        p.close()


def replicas_config(reps: list[Replica], *, strategy: str = "round_robin", stateless: bool = False,
                    allow: bool = False, state_dir: Path | None = None, threshold: int = 2) -> str:
    lines = ["[proxy]", f'admin_token = "{TOKEN}"']
    if allow:
        lines.append("allow_fleet_changes = true")
    if state_dir is not None:
        lines.append(f'state_dir = "{state_dir}"')
    lines += ["", "[[servers]]", 'name = "ev"', "replicas = ["]
    lines += [f'  {{ url = "{r.url}" }},' for r in reps]
    lines += ["]", f'strategy = "{strategy}"', f"stateless = {'true' if stateless else 'false'}",
              'health_check_interval = "500ms"', f"failover_threshold = {threshold}", 'timeout = "10s"']
    return "\n".join(lines) + "\n"


def call(url: str, sid: str, name: str, arguments: dict, request_id=None, timeout: float = 60.0):
    req = rpc("tools/call", {"name": name, "arguments": arguments}, request_id=request_id)
    r = raw_request(url, body=req, session=sid, timeout=timeout)
    return r, r.response_for(req["id"])


def tool(url: str, sid: str, name: str, arguments: dict) -> dict:
    """A proxy tool's structuredContent (the call must be answered with a result)."""
    r, answer = call(url, sid, name, arguments)
    assert answer and "result" in answer, f"{name}: HTTP {r.status} {r.messages}"
    return answer["result"]


def whoami(url: str, sid: str) -> str:
    _, answer = call(url, sid, "ev__whoami", {})
    assert answer and "result" in answer and not answer["result"].get("isError"), answer
    return tool_text(answer["result"])


def replicas_of(structured: dict, server: str = "ev") -> dict:
    """The server's replicas by URL, from monitor_health or balance_load."""
    [s] = [s for s in structured["servers"] if s["server"] == server]
    return {r["url"]: r for r in s["replicas"]}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        ok, last = predicate()
        if ok:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last seen: {json.dumps(last)[:2000]}")


def mcpctl(proxy: harness.Proxy, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    if not MCPCTL.exists():
        pytest.skip(f"{MCPCTL} missing: cargo build --release -p mcpctl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env.update({"MCPCTL_URL": proxy.admin_url or "", "MCPCTL_TOKEN": TOKEN, "MCPCTL_MCP_URL": proxy.url})
    return subprocess.run([str(MCPCTL), *args], env=env, capture_output=True, text=True, timeout=timeout)


def ok_json(proxy: harness.Proxy, *args: str):
    r = mcpctl(proxy, *args, "--json")
    assert r.returncode == 0, f"mcpctl {' '.join(args)}: exit {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------------------------
# monitor_health, balance_load, optimize_performance


def test_monitor_health_shows_a_killed_replica_failing(procs):
    a, b = procs.loadgen("a"), procs.loadgen("b")
    proxy = procs.proxy(replicas_config([a, b]))
    sid = raw_initialize(proxy.url)
    for _ in range(4):
        whoami(proxy.url, raw_initialize(proxy.url))
    before = replicas_of(tool(proxy.url, sid, "proxy__monitor_health", {"server": "ev"})["structuredContent"])
    assert before[a.url]["state"] == "healthy" and before[b.url]["state"] == "healthy", before
    b.kill()

    def b_failing():
        h = tool(proxy.url, sid, "proxy__monitor_health", {"server": "ev"})["structuredContent"]
        reps = replicas_of(h)
        return reps[b.url]["failing"], h

    h = wait_for(b_failing, 20, "the killed replica to show as failing")
    reps = replicas_of(h)
    assert reps[b.url]["state"] in ("unhealthy", "ejected", "failing"), reps[b.url]
    assert reps[a.url]["state"] == "healthy" and not reps[a.url]["failing"], reps[a.url]
    assert h["servers"][0]["replicas_failing"] == 1
    assert h["shards_answered"] == 2


def test_balance_load_shows_picks_and_a_new_strategy_takes_effect(procs, tmp_path):
    a, b = procs.loadgen("a"), procs.loadgen("b")
    state = tmp_path / "state"
    proxy = procs.proxy(replicas_config([a, b], allow=True, state_dir=state))
    early = raw_initialize(proxy.url)
    early_replica = whoami(proxy.url, early)
    first = Counter(whoami(proxy.url, raw_initialize(proxy.url)) for _ in range(12))
    assert first["a"] > 0 and first["b"] > 0, first
    sid = raw_initialize(proxy.url)
    shown = tool(proxy.url, sid, "proxy__balance_load", {"server": "ev"})["structuredContent"]
    reps = replicas_of(shown)
    assert reps[a.url]["picks"] > 0 and reps[b.url]["picks"] > 0, reps
    assert shown["servers"][0]["strategy"] == "round_robin"
    picks_before = sum(r["picks"] for r in reps.values())
    assert picks_before >= 13

    changed = tool(proxy.url, sid, "proxy__balance_load",
                   {"server": "ev", "strategy": "weighted", "weights": {"0": 1, b.url: 30}})
    assert not changed.get("isError"), changed
    assert changed["structuredContent"]["changed"]["strategy"] == "weighted"
    # Every shard applies it: wait until both report the new strategy.
    wait_for(lambda: (lambda s: (s["servers"][0]["strategy"] == "weighted", s))(
        tool(proxy.url, sid, "proxy__balance_load", {"server": "ev"})["structuredContent"]),
        10, "the strategy to be in force")
    after = Counter(whoami(proxy.url, raw_initialize(proxy.url)) for _ in range(40))
    assert after["b"] >= 32, f"weight 30 of 31 should take nearly every new session: {dict(after)}"
    # A session bound before the change keeps its replica: nothing was reset.
    assert whoami(proxy.url, early) == early_replica
    saved = json.loads((state / "registry.json").read_text())
    assert "weighted" in json.dumps(saved), saved
    reps = replicas_of(tool(proxy.url, sid, "proxy__balance_load", {"server": "ev"})["structuredContent"])
    assert reps[b.url]["weight"] == 30 and reps[a.url]["weight"] == 1
    # The change was taken in place: the balancer's statistics carry on rather than restart.
    assert sum(r["picks"] for r in reps.values()) >= picks_before + 40, reps


def test_balance_changes_are_refused_without_the_flag(procs):
    a, b = procs.loadgen("a"), procs.loadgen("b")
    proxy = procs.proxy(replicas_config([a, b]))
    sid = raw_initialize(proxy.url)
    result = tool(proxy.url, sid, "proxy__balance_load", {"server": "ev", "strategy": "random"})
    assert result.get("isError") is True
    assert "allow_fleet_changes" in result["structuredContent"]["error"], result
    shown = tool(proxy.url, sid, "proxy__balance_load", {"server": "ev"})["structuredContent"]
    assert shown["servers"][0]["strategy"] == "round_robin"


def test_optimize_performance_flags_the_slow_replica(procs):
    slow = procs.loadgen("slow", "--latency", "150ms", "--stateless")
    fast = [procs.loadgen("f1", "--stateless"), procs.loadgen("f2", "--stateless")]
    proxy = procs.proxy(replicas_config([slow, *fast], stateless=True))
    sid = raw_initialize(proxy.url)
    for i in range(30):
        _, answer = call(proxy.url, sid, "ev__echo", {"message": f"m{i}"})
        assert answer and "result" in answer, answer
    assert slow.requests_of("tools/call", "echo") >= 5

    def flagged():
        f = tool(proxy.url, sid, "proxy__optimize_performance", {"server": "ev"})["structuredContent"]
        kinds = [(x["kind"], x["subject"]) for x in f["findings"]]
        return ("slow_replica", slow.url) in kinds, f

    # The histograms are published once a second.
    found = wait_for(flagged, 10, "a slow_replica finding")
    slow_findings = [x for x in found["findings"] if x["kind"] == "slow_replica"]
    assert [x["subject"] for x in slow_findings] == [slow.url], slow_findings
    assert slow_findings[0]["recommendation"], slow_findings
    perf = read_resource(proxy.url, sid, "metrics://performance/")
    [ev] = perf["servers"]
    by_url = {r["url"]: r for r in ev["replicas"]}
    assert by_url[slow.url]["upstream"]["p50_ms"] >= 100
    assert all(by_url[f.url]["upstream"]["p50_ms"] < 100 for f in fast), by_url
    assert any(t["tool"] == "echo" and t["calls"] >= 30 for t in perf["tools"]), perf["tools"]


# ---------------------------------------------------------------------------------------------
# Saved workflows through mcpctl


def workflows_config(everything_url: str, state_dir: Path | None, tmp: Path) -> str:
    state = f'state_dir = "{state_dir}"\n' if state_dir else ""
    return f"""[proxy]
admin_token = "{TOKEN}"
{state}
[[servers]]
name = "everything"
url = "{everything_url}"

[[servers]]
name = "memory"
command = "{MEMORY_BIN}"
env = {{ MEMORY_FILE_PATH = "{tmp / 'memory.jsonl'}" }}
"""


GREET = {
    "description": "echo a greeting and remember who was greeted",
    "steps": [
        {"id": "hello", "tool": "everything__echo", "arguments": {"message": "hi {{inputs.who}}"}},
        {"id": "remember", "tool": "memory__create_entities", "depends_on": ["hello"],
         "arguments": {"entities": [{"name": "{{inputs.who}}", "entityType": "person",
                                     "observations": ["{{steps.hello.text}}"]}]}},
    ],
}


def wait_up(proxy: harness.Proxy, servers: int = 2) -> None:
    def up():
        # `mcpctl health` exits 6 while some server is not up yet, and still prints.
        r = mcpctl(proxy, "health", "--json")
        assert r.returncode in (0, 6), f"mcpctl health: exit {r.returncode}: {r.stderr}"
        h = json.loads(r.stdout)
        return sum(1 for s in h["servers"].values() if s["status"] == "up") == servers, h

    wait_for(up, 30, "every server up")


def test_saved_workflows_through_mcpctl_survive_a_restart(procs, tmp_path):
    ev = procs.everything()
    state = tmp_path / "state"
    config = workflows_config(ev.url, state, tmp_path)
    proxy = procs.proxy(config)
    wait_up(proxy)
    wf = tmp_path / "greet.json"
    wf.write_text(json.dumps(GREET))
    put = ok_json(proxy, "workflows", "put", "greet", "--file", str(wf))
    assert put["created"] is True and put["name"] == "greet"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": [{"id": "x", "tool": "nope__missing"}]}))
    r = mcpctl(proxy, "workflows", "put", "broken", "--file", str(bad), "--json")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "workflow.steps[0].tool" in r.stderr, r.stderr

    listed = ok_json(proxy, "workflows", "ls")
    assert [w["name"] for w in listed["workflows"]] == ["greet"]
    assert listed["workflows"][0]["steps"] == 2
    assert ok_json(proxy, "workflows", "show", "greet")["workflow"] == GREET

    who = f"bob-{uuid.uuid4().hex[:6]}"
    report = ok_json(proxy, "workflows", "run", "greet", "--inputs", json.dumps({"who": who}))
    assert report["status"] == "succeeded" and report["workflow"] == "greet", report
    steps = {s["id"]: s for s in report["steps"]}
    assert tool_text(steps["hello"]["result"]) == f"Echo: hi {who}"
    sid = raw_initialize(proxy.url)
    _, found = call(proxy.url, sid, "memory__search_nodes", {"query": who})
    assert f"Echo: hi {who}" in tool_text(found["result"]), "the second step wrote to server-memory"

    # Runs are listed from every shard: sessions on new connections land on either shard (the
    # kernel's pick: sessions are opened until both shards ran one, 40 at most).
    ran_on: set[str] = set()
    for i in range(40):
        s = raw_initialize(proxy.url)
        _, answer = call(proxy.url, s, "proxy__orchestrate_workflow", {"name": "greet", "inputs": {"who": f"{who}-{i}"}})
        assert answer["result"]["structuredContent"]["status"] == "succeeded", answer
        ran_on.add(s[:2])
        if len(ran_on) == 2 and i >= 3:
            break
    runs = read_resource(proxy.url, sid, "orchestration://workflows/")
    assert runs["shards_answered"] == 2
    owners = {r["run_id"].split("-")[0] for r in runs["runs"] if r.get("workflow") == "greet"}
    assert owners == {"0", "1"}, f"runs from both shards expected: {runs['runs']}"
    # One run's report from each shard: at least one of them is fetched over the mesh.
    for owner in ("0", "1"):
        run = next(r for r in runs["runs"] if r["run_id"].split("-")[0] == owner)
        detail = read_resource(proxy.url, sid, f"orchestration://workflows/{run['run_id']}")
        assert detail["run_id"] == run["run_id"] and detail["report"]["steps"], detail

    # A restart keeps the workflow.
    proxy.kill()
    proxy = procs.proxy(config)
    wait_up(proxy)
    assert [w["name"] for w in ok_json(proxy, "workflows", "ls")["workflows"]] == ["greet"]
    report = ok_json(proxy, "workflows", "run", "greet", "--inputs", json.dumps({"who": who + "-again"}))
    assert report["status"] == "succeeded", report

    removed = ok_json(proxy, "workflows", "rm", "greet")
    assert removed["removed"] is True
    assert ok_json(proxy, "workflows", "ls")["workflows"] == []
    r = mcpctl(proxy, "workflows", "rm", "greet")
    assert r.returncode == 5 and "no saved workflow" in r.stderr, (r.returncode, r.stderr)
    r = mcpctl(proxy, "workflows", "run", "greet")
    assert r.returncode != 0 and "no saved workflow" in r.stderr, (r.returncode, r.stderr)


def test_saved_workflow_without_state_dir_runs_on_every_shard(procs, tmp_path):
    ev = procs.everything()
    proxy = procs.proxy(workflows_config(ev.url, None, tmp_path))
    wait_up(proxy)
    wf = tmp_path / "echo.json"
    wf.write_text(json.dumps({"steps": [{"id": "e", "tool": "everything__echo", "arguments": {"message": "x"}}]}))
    ok_json(proxy, "workflows", "put", "echo-only", "--file", str(wf))
    owners = set()
    for _ in range(12):
        s = raw_initialize(proxy.url)
        _, answer = call(proxy.url, s, "proxy__orchestrate_workflow", {"name": "echo-only"})
        assert answer and "result" in answer, f"the saved workflow is not known on some shard: {answer}"
        owners.add(answer["result"]["structuredContent"]["run_id"].split("-")[0])
    assert owners == {"0", "1"}, owners


# ---------------------------------------------------------------------------------------------
# Cancellation reaches upstream


def test_cancelling_a_run_cancels_its_step_upstream(procs):
    up = procs.loadgen("slowone")
    proxy = procs.proxy(replicas_config([up]))
    sid = raw_initialize(proxy.url)
    request_id = f"run-{uuid.uuid4().hex[:6]}"
    outcome = {}

    def runner():
        outcome["r"], outcome["answer"] = call(proxy.url, sid, "proxy__orchestrate_workflow", {"workflow": {
            "name": "to-cancel", "steps": [{"id": "long", "tool": "ev__slow", "arguments": {"ms": 8000}}]}},
            request_id=request_id, timeout=30)

    t = threading.Thread(target=runner)
    t.start()
    wait_for(lambda: (up.requests_of("tools/call", "slow") >= 1, None), 10, "the step's call to reach the upstream")
    n = raw_request(proxy.url, session=sid, body={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                  "params": {"requestId": request_id, "reason": "test"}})
    assert n.status == 202
    t.join(15)
    assert not t.is_alive()
    assert outcome["answer"] is None, "a cancelled request gets no response"

    def upstream_told():
        lines = [l for l in up.stderr().splitlines() if "notification notifications/cancelled" in l]
        return bool(lines), lines

    lines = wait_for(upstream_told, 10, "notifications/cancelled at the upstream")
    assert len(lines) == 1, lines
    runs = read_resource(proxy.url, sid, "orchestration://workflows/")
    mine = [x for x in runs["runs"] if x.get("workflow") == "to-cancel"]
    assert mine and mine[0]["status"] == "cancelled", runs
