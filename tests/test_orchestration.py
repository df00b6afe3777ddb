"""Orchestration: the proxy's own tools and resources over real upstreams.

Topology (module fixture `orch`): server-everything over Streamable HTTP (`everything`),
server-memory and server-filesystem over stdio (`memory`, `filesystem`), behind one proxy with
two shards and a state directory holding one saved workflow.

What is held here:
- a 4-step workflow with a parallel fan-out passes one server's output into another's tool;
- a failing step under `continue` and under `abort` behaves as declared;
- cancelling a run (notifications/cancelled) stops its remaining steps;
- progress notifications per step when the call carries a progressToken;
- search_tools ranks the intended tool first for every need in tests/data/search_needs.json;
- bad arguments to every proxy tool get -32602 naming the field;
- tool_exposure = "search" lists only the proxy's tools and reaches upstream ones via call_tool.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import harness
from harness import NODE_BIN, TESTS_DIR, raw_initialize, raw_request, rpc

MEMORY_BIN = NODE_BIN / "mcp-server-memory"
FILESYSTEM_BIN = NODE_BIN / "mcp-server-filesystem"
NEEDS = json.loads((TESTS_DIR / "data" / "search_needs.json").read_text())["needs"]

SAVED = {
    "version": 1,
    "workflows": {
        "greet": {
            "steps": [
                {"id": "hello", "tool": "everything__echo", "arguments": {"message": "hello {{inputs.who}}"}},
            ]
        }
    },
}


def config(everything_url: str, tmp: Path, extra_proxy: str = "") -> str:
    return f"""
[proxy]
state_dir = "{tmp / 'state'}"
{extra_proxy}

[[servers]]
name = "everything"
url = "{everything_url}"
tags = ["demo"]

[[servers]]
name = "memory"
command = "{MEMORY_BIN}"
env = {{ MEMORY_FILE_PATH = "{tmp / 'memory.jsonl'}" }}
tags = ["knowledge-graph"]

[[servers]]
name = "filesystem"
command = "{FILESYSTEM_BIN}"
args = ["{tmp / 'files'}"]
tags = ["files"]
"""


@pytest.fixture(scope="module")
def orch():
    tmp = Path(tempfile.mkdtemp(prefix="orch-"))
    (tmp / "files").mkdir()
    (tmp / "state").mkdir()
    (tmp / "state" / "workflows.json").write_text(json.dumps(SAVED))
    started = []
    try:
        ev = harness.start_everything_http()
        started.append(ev)
        proxy = harness.start_proxy(config(ev.url, tmp), shards=2)
        started.append(proxy)
        wait_until_up(proxy.url, 3)
        yield proxy
    finally:
        for p in reversed(started):
            p.kill()


def wait_until_up(url: str, servers: int, timeout: float = 20.0) -> None:
    """Discovery of stdio children can lag the ready line: wait until every server is up."""
    sid = raw_initialize(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reg = read_resource(url, sid, "servers://registry/")
        if sum(1 for s in reg["servers"] if s["state"] == "up") == servers:
            return
        time.sleep(0.3)
    raise AssertionError(f"not every server came up: {reg}")


def read_resource(url: str, sid: str, uri: str) -> dict:
    req = rpc("resources/read", {"uri": uri})
    r = raw_request(url, body=req, session=sid)
    answer = r.response_for(req["id"])
    assert answer and "result" in answer, f"{uri}: {r.messages}"
    return json.loads(answer["result"]["contents"][0]["text"])


def call(url: str, sid: str, name: str, arguments: dict, meta: dict | None = None, request_id=None,
         timeout: float = 60.0):
    params = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    req = rpc("tools/call", params, request_id=request_id)
    r = raw_request(url, body=req, session=sid, timeout=timeout)
    return r, r.response_for(req["id"])


def run_workflow(url: str, sid: str, workflow: dict, inputs: dict | None = None, **kw):
    args = {"workflow": workflow}
    if inputs is not None:
        args["inputs"] = inputs
    r, answer = call(url, sid, "proxy__orchestrate_workflow", args, **kw)
    assert answer and "result" in answer, f"{r.status} {r.messages}"
    return r, answer["result"]


def steps_by_id(result: dict) -> dict:
    return {s["id"]: s for s in result["structuredContent"]["steps"]}


def step_text(step: dict) -> str:
    return "".join(c.get("text", "") for c in step["result"].get("content", []) if c.get("type") == "text")


# ---------------------------------------------------------------------------------------------
# Workflows


def test_four_steps_fan_out_and_pass_results_across_servers(orch):
    sid = raw_initialize(orch.url)
    entity = f"sum-{uuid.uuid4().hex[:8]}"
    workflow = {
        "name": "sum-and-remember",
        "steps": [
            {"id": "sum", "tool": "everything__get-sum", "arguments": {"a": "{{inputs.a}}", "b": 3}},
            {"id": "echo", "tool": "everything__echo", "arguments": {"message": "hi {{inputs.who}}"}},
            {"id": "store", "tool": "memory__create_entities", "depends_on": ["echo"],
             "arguments": {"entities": [{"name": entity, "entityType": "result",
                                         "observations": ["{{steps.sum.text}}", "{{steps.echo.text}}"]}]}},
            {"id": "read", "tool": "memory__open_nodes", "depends_on": ["store"],
             "arguments": {"names": [entity]}},
        ],
    }
    r, result = run_workflow(orch.url, sid, workflow, {"a": 2, "who": "Ada"},
                             meta={"progressToken": "wf-1"})
    sc = result["structuredContent"]
    assert sc["status"] == "succeeded", sc
    assert not result.get("isError")
    steps = steps_by_id(result)
    assert step_text(steps["sum"]) == "The sum of 2 and 3 is 5."
    assert step_text(steps["echo"]) == "Echo: hi Ada"
    read = step_text(steps["read"])
    assert "The sum of 2 and 3 is 5." in read and "Echo: hi Ada" in read and entity in read, read
    # sum and echo are independent: both start at once, before store, which waits for both.
    assert steps["echo"]["started_ms"] < steps["sum"]["started_ms"] + steps["sum"]["duration_ms"]
    assert steps["store"]["started_ms"] >= steps["sum"]["started_ms"] + steps["sum"]["duration_ms"]
    assert steps["read"]["started_ms"] >= steps["store"]["started_ms"] + steps["store"]["duration_ms"]
    assert all(s["attempts"] == 1 and "duration_ms" in s for s in steps.values())
    # One progress notification per step, then the response, on the request's SSE stream.
    progress = [m for m in r.messages if m.get("method") == "notifications/progress"]
    assert [p["params"]["progress"] for p in progress] == [1, 2, 3, 4], r.messages
    assert all(p["params"]["progressToken"] == "wf-1" and p["params"]["total"] == 4 for p in progress)
    assert r.messages[-1].get("result") == result
    # The run is listed with its status.
    runs = read_resource(orch.url, sid, "orchestration://workflows/")
    mine = [x for x in runs["runs"] if x["run_id"] == sc["run_id"]]
    assert mine and mine[0]["status"] == "succeeded" and mine[0]["workflow"] == "sum-and-remember"
    assert "greet" in runs["saved_workflows"]
    full = read_resource(orch.url, sid, f"orchestration://workflows/{sc['run_id']}")
    assert full["report"]["status"] == "succeeded"


def test_continue_runs_the_rest_and_skips_dependents(orch):
    sid = raw_initialize(orch.url)
    _, result = run_workflow(orch.url, sid, {"steps": [
        {"id": "bad", "tool": "everything__get-sum", "arguments": {"a": "not a number", "b": 1},
         "on_error": "continue"},
        {"id": "after_bad", "tool": "everything__echo", "depends_on": ["bad"], "arguments": {"message": "x"}},
        {"id": "other", "tool": "everything__echo", "arguments": {"message": "still here"}},
    ]})
    sc = result["structuredContent"]
    steps = steps_by_id(result)
    assert sc["status"] == "completed_with_errors", sc
    assert steps["bad"]["status"] == "failed" and steps["bad"]["error"], steps["bad"]
    assert steps["after_bad"]["status"] == "skipped"
    assert steps["other"]["status"] == "succeeded" and step_text(steps["other"]) == "Echo: still here"
    assert not result.get("isError")


def test_abort_stops_the_run_and_fallback_stands_in(orch):
    sid = raw_initialize(orch.url)
    entity = f"never-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    _, result = run_workflow(orch.url, sid, {"steps": [
        {"id": "slow", "tool": "everything__trigger-long-running-operation", "arguments": {"duration": 4, "steps": 2}},
        {"id": "bad", "tool": "everything__get-sum", "arguments": {"a": "nope", "b": 1}},
        {"id": "after", "tool": "memory__create_entities", "depends_on": ["slow"],
         "arguments": {"entities": [{"name": entity, "entityType": "x", "observations": []}]}},
    ]})
    assert time.monotonic() - started < 3.5, "abort waited for the slow step"
    sc = result["structuredContent"]
    steps = steps_by_id(result)
    assert sc["status"] == "failed" and result.get("isError") is True, sc
    assert steps["bad"]["status"] == "failed"
    assert steps["slow"]["status"] == "cancelled"
    assert steps["after"]["status"] == "skipped"
    _, found = call(orch.url, sid, "memory__search_nodes", {"query": entity})
    assert entity not in harness.tool_text(found["result"])
    # on_error fallback: the replacement's result stands in.
    _, result = run_workflow(orch.url, sid, {"steps": [
        {"id": "s", "tool": "everything__get-sum", "arguments": {"a": "nope", "b": 1},
         "retry": {"attempts": 2, "backoff_ms": 10}, "on_error": "fallback",
         "fallback": {"tool": "everything__echo", "arguments": {"message": "plan b"}}},
        {"id": "use", "tool": "everything__echo", "arguments": {"message": "got {{steps.s.text}}"}},
    ]})
    steps = steps_by_id(result)
    assert result["structuredContent"]["status"] == "succeeded"
    assert steps["s"]["status"] == "fell_back" and steps["s"]["tool"] == "everything__echo"
    assert step_text(steps["use"]) == "Echo: got Echo: plan b"


def test_cancelling_a_run_stops_its_remaining_steps(orch):
    sid = raw_initialize(orch.url)
    entity = f"cancelled-{uuid.uuid4().hex[:8]}"
    request_id = f"run-{uuid.uuid4().hex[:6]}"
    outcome = {}

    def runner():
        outcome["r"], outcome["answer"] = call(orch.url, sid, "proxy__orchestrate_workflow", {"workflow": {
            "name": "to-cancel",
            "steps": [
                {"id": "long", "tool": "everything__trigger-long-running-operation",
                 "arguments": {"duration": 3, "steps": 3}},
                {"id": "later", "tool": "memory__create_entities", "depends_on": ["long"],
                 "arguments": {"entities": [{"name": entity, "entityType": "x", "observations": []}]}},
            ]}}, request_id=request_id)

    t = threading.Thread(target=runner)
    t.start()
    time.sleep(1.0)
    n = raw_request(orch.url, session=sid, body={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                 "params": {"requestId": request_id, "reason": "test"}})
    assert n.status == 202
    t.join(10)
    assert not t.is_alive()
    assert outcome["answer"] is None, "a cancelled request gets no response"
    time.sleep(3.0)  # past the point where `later` would have run
    _, found = call(orch.url, sid, "memory__search_nodes", {"query": entity})
    assert entity not in harness.tool_text(found["result"])
    runs = read_resource(orch.url, sid, "orchestration://workflows/")
    mine = [x for x in runs["runs"] if x.get("workflow") == "to-cancel"]
    assert mine and mine[0]["status"] == "cancelled", runs
    full = read_resource(orch.url, sid, f"orchestration://workflows/{mine[0]['run_id']}")
    assert {s["id"]: s["status"] for s in full["report"]["steps"]} == {"long": "cancelled", "later": "cancelled"}


def test_saved_workflow_by_name(orch):
    sid = raw_initialize(orch.url)
    r, answer = call(orch.url, sid, "proxy__orchestrate_workflow", {"name": "greet", "inputs": {"who": "Bob"}})
    sc = answer["result"]["structuredContent"]
    assert sc["status"] == "succeeded" and sc["workflow"] == "greet"
    assert step_text(sc["steps"][0]) == "Echo: hello Bob"


# ---------------------------------------------------------------------------------------------
# Search, planning, fleet views


def test_search_ranks_the_intended_tool_first(orch):
    sid = raw_initialize(orch.url)
    assert len(NEEDS) >= 10
    wrong = []
    for item in NEEDS:
        _, answer = call(orch.url, sid, "proxy__search_tools", {"query": item["need"], "k": 3})
        tools = answer["result"]["structuredContent"]["tools"]
        first = tools[0]["name"] if tools else None
        if first != item["tool"]:
            wrong.append((item["need"], item["tool"], [t["name"] for t in tools]))
        else:
            assert "inputSchema" in tools[0]
    assert not wrong, "\n".join(f"{n!r}: wanted {w}, got {g}" for n, w, g in wrong)


def test_plan_discover_health_balance_optimize(orch):
    sid = raw_initialize(orch.url)
    _, answer = call(orch.url, sid, "proxy__plan_workflow", {
        "goal": "remember a sum", "capabilities": ["add two numbers", "store new entities in the knowledge graph"],
        "inputs": ["a", "b"]})
    plan = answer["result"]["structuredContent"]
    assert [c["tool"] for c in plan["choices"]] == ["everything__get-sum", "memory__create_entities"]
    assert plan["workflow"]["steps"][0]["arguments"] == {"a": "{{inputs.a}}", "b": "{{inputs.b}}"}
    assert "entities" in plan["inputs_needed"]
    _, answer = call(orch.url, sid, "proxy__discover_servers", {"tag": "files"})
    servers = answer["result"]["structuredContent"]["servers"]
    assert [s["name"] for s in servers] == ["filesystem"] and servers[0]["state"] == "up"
    _, answer = call(orch.url, sid, "proxy__discover_servers", {"capability": "knowledge graph entities"})
    assert [s["name"] for s in answer["result"]["structuredContent"]["servers"]] == ["memory"]
    _, answer = call(orch.url, sid, "proxy__monitor_health", {"server": "memory"})
    h = answer["result"]["structuredContent"]
    assert [s["server"] for s in h["servers"]] == ["memory"]
    assert h["servers"][0]["state"] == "up" and h["servers"][0]["children"] == 1
    assert h["shards_answered"] == 2, "every shard's figures are gathered"
    _, answer = call(orch.url, sid, "proxy__balance_load", {})
    b = answer["result"]["structuredContent"]
    by_name = {s["server"]: s for s in b["servers"]}
    assert set(by_name) == {"everything", "memory", "filesystem"}
    assert len(by_name["everything"]["replicas"]) == 1 and by_name["everything"]["strategy"] == "least_latency"
    assert by_name["memory"]["replicas"] == [] and by_name["memory"]["children"] == 1
    _, answer = call(orch.url, sid, "proxy__balance_load", {"server": "everything", "strategy": "round_robin"})
    assert answer["result"]["isError"] is True
    assert "allow_fleet_changes" in answer["result"]["structuredContent"]["error"], answer
    _, answer = call(orch.url, sid, "proxy__optimize_performance", {})
    assert "findings" in answer["result"]["structuredContent"]
    metrics = read_resource(orch.url, sid, "metrics://performance/")
    assert sum(s["sessions"] for s in metrics["shards"]) >= 1
    assert {s["server"] for s in metrics["servers"]} == {"everything", "memory", "filesystem"}
    assert all(k in metrics["servers"][0]["latency"] for k in ("p50_ms", "p90_ms", "p99_ms"))


def test_lists_start_with_the_proxy_items(orch):
    sid = raw_initialize(orch.url)
    r = raw_request(orch.url, body=rpc("tools/list", {}), session=sid)
    names = [t["name"] for t in r.messages[0]["result"]["tools"]]
    assert names[:8] == ["proxy__search_tools", "proxy__orchestrate_workflow", "proxy__plan_workflow",
                         "proxy__discover_servers", "proxy__monitor_health", "proxy__balance_load",
                         "proxy__optimize_performance", "proxy__call_tool"]
    assert "everything__get-sum" in names and "memory__read_graph" in names
    r = raw_request(orch.url, body=rpc("resources/list", {}), session=sid)
    uris = [x["uri"] for x in r.messages[0]["result"]["resources"]]
    assert uris[:3] == ["orchestration://workflows/", "servers://registry/", "metrics://performance/"]


BAD_ARGUMENTS = [
    ("proxy__search_tools", {}, "query"),
    ("proxy__search_tools", {"query": "x", "k": 0}, "k"),
    ("proxy__search_tools", {"query": "x", "server": "nope"}, "server"),
    ("proxy__search_tools", {"query": "x", "limit": 3}, "limit"),
    ("proxy__orchestrate_workflow", {}, "workflow"),
    ("proxy__orchestrate_workflow", {"name": "no-such"}, "name"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": "x"}}, "workflow.steps"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": [{"id": "a", "tool": "nope__x"}]}}, "workflow.steps[0].tool"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": [
        {"id": "a", "tool": "everything__echo", "depends_on": ["b"]},
        {"id": "b", "tool": "everything__echo", "depends_on": ["a"]}]}}, "workflow.steps"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": [
        {"id": "a", "tool": "everything__echo", "depends_on": ["zz"]}]}}, "workflow.steps[0].depends_on[0]"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": [
        {"id": "a", "tool": "everything__echo", "arguments": {"message": "{{inputs.m}}"}}]}}, "inputs.m"),
    ("proxy__orchestrate_workflow", {"workflow": {"steps": [{"id": "a", "tool": "everything__echo"}]},
                                     "inputs": []}, "inputs"),
    ("proxy__plan_workflow", {"goal": "x"}, "capabilities"),
    ("proxy__plan_workflow", {"capabilities": ["x"]}, "goal"),
    ("proxy__plan_workflow", {"goal": "x", "capabilities": ["ok", 3]}, "capabilities[1]"),
    ("proxy__discover_servers", {"health": "sick"}, "health"),
    ("proxy__discover_servers", {"tag": 5}, "tag"),
    ("proxy__monitor_health", {"server": "nope"}, "server"),
    ("proxy__balance_load", {"weights": [1, 2]}, "weights"),
    ("proxy__balance_load", {"server": "everything", "strategy": "fastest"}, "strategy"),
    ("proxy__balance_load", {"server": "everything", "weights": {"7": 2}}, "weights.7"),
    ("proxy__balance_load", {"strategy": "random"}, "server"),
    ("proxy__optimize_performance", {"server": ""}, "server"),
    ("proxy__call_tool", {}, "name"),
    ("proxy__call_tool", {"name": "everything__nope"}, "name"),
    ("proxy__call_tool", {"name": "everything__echo", "arguments": "x"}, "arguments"),
]


@pytest.mark.parametrize("tool,arguments,field", BAD_ARGUMENTS)
def test_bad_arguments_name_the_field(orch, tool, arguments, field):
    sid = raw_initialize(orch.url)
    _, answer = call(orch.url, sid, tool, arguments)
    assert answer and "error" in answer, answer
    assert answer["error"]["code"] == -32602
    assert f'"{field}"' in answer["error"]["message"], answer["error"]["message"]
    assert answer["error"]["data"]["field"] == field


def test_every_proxy_tool_is_covered_by_bad_argument_cases(orch):
    sid = raw_initialize(orch.url)
    r = raw_request(orch.url, body=rpc("tools/list", {}), session=sid)
    own = {t["name"] for t in r.messages[0]["result"]["tools"] if t["name"].startswith("proxy__")}
    assert own == {case[0] for case in BAD_ARGUMENTS}


# ---------------------------------------------------------------------------------------------
# Search mode and configuration


def test_search_mode_lists_only_proxy_tools_and_calls_through(spawner, tmp_path):
    ev = spawner.everything()
    (tmp_path / "files").mkdir()
    proxy = spawner.proxy(config(ev.url, tmp_path, 'tool_exposure = "search"'))
    wait_until_up(proxy.url, 3)
    sid = raw_initialize(proxy.url)
    r = raw_request(proxy.url, body=rpc("tools/list", {}), session=sid)
    names = [t["name"] for t in r.messages[0]["result"]["tools"]]
    assert names and all(n.startswith("proxy__") for n in names), names
    _, answer = call(proxy.url, sid, "proxy__search_tools", {"query": "sum of two numbers", "k": 1})
    found = answer["result"]["structuredContent"]["tools"][0]["name"]
    assert found == "everything__get-sum"
    _, answer = call(proxy.url, sid, "proxy__call_tool", {"name": found, "arguments": {"a": 1, "b": 2}})
    assert harness.tool_text(answer["result"]) == "The sum of 1 and 2 is 3."


def test_a_server_may_not_take_the_proxy_namespace(tmp_path):
    with pytest.raises(RuntimeError) as e:
        harness.start_proxy('[[servers]]\nname = "proxy"\nurl = "http://127.0.0.1:9/mcp"\n')
    assert "reserved" in str(e.value)
