"""Both protocol eras through one endpoint, and the bridge between them.

Topology (module fixture `eras`): `alpha` is server-everything (stateful, 2025-11-25, with a
sampling tool); `modern` is two replicas of the Python SDK's MCPServer answering 2026-07-28
statelessly (tests/fixtures/stateless_server.py, with `sample_word` asking for sampling through
`input_required`). One proxy with two shards serves them.

Clients: the SDK's high-level `mcp.Client` (probes `server/discover`, stays in 2026-07-28) and
its low-level stateful `ClientSession` (initialize). Every combination lists and calls tools and
gets sampling through the bridge. Raw HTTP checks the era's headers and error codes.
"""

from __future__ import annotations

import json
import secrets
import sys
import urllib.request
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client

import harness
from harness import ACCEPT_BOTH, raw_request, sdk_session, text_of

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stateless_server.py"
MODERN = "2026-07-28"
STATEFUL = {"2025-11-25", "2025-06-18", "2025-03-26"}


def run(fn, *args):
    return anyio.run(fn, *args)


async def answer_sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    """A stand-in LLM: the last word of the prompt, reversed and tagged."""
    content = params.messages[-1].content
    parts = content if isinstance(content, list) else [content]
    text = "".join(c.text for c in parts if c.type == "text")
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled:{text.split()[-1][::-1]}"),
        model="test-model",
        stop_reason="endTurn",
    )


def start_modern(name: str, state_key: str | None) -> harness.Upstream:
    port = harness.free_port()
    env = {"STATE_KEY": state_key} if state_key else None
    child = harness.spawn(f"modern-{name}", [sys.executable, str(FIXTURE), str(port), name], env=env)
    try:
        harness.wait_for_port(port, child)
    except BaseException:
        child.kill()
        raise
    return harness.Upstream(child, port)


class Eras:
    def __init__(self, proxy: harness.Proxy, started: list) -> None:
        self.proxy = proxy
        self.started = started

    @property
    def url(self) -> str:
        return self.proxy.url


def eras_config(alpha: str, replicas: list[str]) -> str:
    reps = ", ".join(f'{{ url = "{u}" }}' for u in replicas)
    return (
        f'[[servers]]\nname = "alpha"\nurl = "{alpha}"\ntimeout = "30s"\n\n'
        f'[[servers]]\nname = "modern"\nreplicas = [{reps}]\nstrategy = "round_robin"\ntimeout = "30s"\n'
    )


@pytest.fixture(scope="module")
def eras():
    started: list = []
    try:
        alpha = harness.start_everything_http()
        started.append(alpha)
        key = secrets.token_hex(32)
        m1 = start_modern("m1", key)
        started.append(m1)
        m2 = start_modern("m2", key)
        started.append(m2)
        proxy = harness.start_proxy(eras_config(alpha.url, [m1.url, m2.url]), shards=2)
        started.append(proxy)
        yield Eras(proxy, started)
    finally:
        for p in reversed(started):
            p.kill()


def modern_client(url: str) -> Client:
    return Client(url, sampling_callback=answer_sampling)


def tool_names(result) -> set[str]:
    return {t.name for t in result.tools}


# ---------------------------------------------------------------------------------------------
# The SDK's two clients, both upstream eras


def test_modern_client_stays_modern_and_lists_both_eras(eras):
    async def go():
        async with modern_client(eras.url) as c:
            return c.protocol_version, c.server_info, tool_names(await c.list_tools())

    version, info, names = run(go)
    assert version == MODERN, "mcp.Client fell back to initialize: server/discover was not answered"
    assert info is not None and info.name == "mcp-proxy"
    assert {"alpha__echo", "alpha__trigger-sampling-request"} <= names
    assert {"modern__whoami", "modern__shout", "modern__sample_word"} <= names


def test_modern_client_calls_a_stateful_upstream(eras):
    async def go():
        async with modern_client(eras.url) as c:
            return await c.call_tool("alpha__echo", {"message": "across eras"})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "Echo: across eras"
    assert result.result_type == "complete"


def test_modern_client_calls_a_stateless_upstream(eras):
    async def go():
        async with modern_client(eras.url) as c:
            return await c.call_tool("modern__shout", {"text": "quiet"})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "QUIET"


def test_stateful_client_lists_and_calls_both_eras(eras):
    async def go():
        async with sdk_session(eras.url, sampling_callback=answer_sampling) as s:
            names = tool_names(await s.list_tools())
            echo = await s.call_tool("alpha__echo", {"message": "old client"})
            shout = await s.call_tool("modern__shout", {"text": "old client"})
            return names, echo, shout

    names, echo, shout = run(go)
    assert {"alpha__echo", "modern__shout", "modern__sample_word"} <= names
    assert text_of(echo) == "Echo: old client"
    assert text_of(shout) == "OLD CLIENT"


def test_stateless_upstream_is_balanced_per_request(eras):
    """No session binds a 2026-07-28 upstream: consecutive calls of one client reach both
    replicas (the server is configured round_robin)."""

    async def go():
        seen = []
        async with modern_client(eras.url) as c:
            for _ in range(6):
                seen.append(text_of(await c.call_tool("modern__whoami", {})))
        async with sdk_session(eras.url) as s:
            for _ in range(6):
                seen.append(text_of(await s.call_tool("modern__whoami", {})))
        return seen

    seen = run(go)
    names = {s.split(":")[0] for s in seen}
    assert names == {"m1", "m2"}, seen


def test_modern_client_gets_progress_from_a_stateful_upstream(eras):
    """A bridged call that reports progress is answered as SSE: the notifications as they come,
    then the result."""
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async def go():
        async with modern_client(eras.url) as c:
            return await c.call_tool("alpha__trigger-long-running-operation", {"duration": 1, "steps": 3},
                                     progress_callback=on_progress)

    result = run(go)
    assert not result.is_error, text_of(result)
    assert "Long running operation completed" in text_of(result)
    assert [v for v, _ in progress] == [1, 2, 3], progress
    assert progress[-1][1] == 3


# ---------------------------------------------------------------------------------------------
# Sampling through the bridge, every combination


def test_sampling_modern_client_stateful_upstream(eras):
    """server-everything sends sampling/createMessage mid-call; the 2026-07-28 client gets it
    as input_required and answers on its retry."""

    async def go():
        async with modern_client(eras.url) as c:
            assert c.protocol_version == MODERN
            return await c.call_tool("alpha__trigger-sampling-request", {"prompt": "say olleh", "maxTokens": 20})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert "sampled:hello" in text_of(result)


def test_sampling_stateful_client_stateless_upstream(eras):
    """The stateless upstream answers input_required; the stateful client is asked a
    sampling/createMessage request instead, and the proxy retries upstream with its answer."""

    async def go():
        async with sdk_session(eras.url, sampling_callback=answer_sampling) as s:
            assert s.initialize_result.protocol_version in STATEFUL
            return await s.call_tool("modern__sample_word", {"prompt": "tell me dlrow"})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "model said: sampled:world"


def test_sampling_modern_client_stateless_upstream(eras):
    async def go():
        async with modern_client(eras.url) as c:
            return await c.call_tool("modern__sample_word", {"prompt": "tell me nruter"})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "model said: sampled:return"


def test_sampling_stateful_client_stateful_upstream_unchanged(eras):
    async def go():
        async with sdk_session(eras.url, sampling_callback=answer_sampling) as s:
            return await s.call_tool("alpha__trigger-sampling-request", {"prompt": "say olleh", "maxTokens": 20})

    result = run(go)
    assert "sampled:hello" in text_of(result)


def test_rounds_stay_on_the_replica_that_asked(spawner):
    """Replicas with their own requestState keys (the SDK's default): the proxy balances
    round robin, yet a stateful client's sampling call works every time, because the retry
    carrying the answers goes back to the replica that asked."""
    replicas = [start_modern("own1", None), start_modern("own2", None)]
    spawner.started.extend(replicas)
    config = (f'[[servers]]\nname = "modern"\nreplicas = [{{ url = "{replicas[0].url}" }}, '
              f'{{ url = "{replicas[1].url}" }}]\nstrategy = "round_robin"\n')
    proxy = spawner.proxy(config, shards=1)

    async def go():
        out = []
        async with sdk_session(proxy.url, sampling_callback=answer_sampling) as s:
            for word in ("one", "two", "three", "four"):
                out.append(await s.call_tool("modern__sample_word", {"prompt": f"say {word}"}))
        return out

    results = run(go)
    assert [text_of(r) for r in results] == [f"model said: sampled:{w[::-1]}" for w in ("one", "two", "three", "four")]


# ---------------------------------------------------------------------------------------------
# The era's wire rules, raw


def modern_headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    h = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json", "MCP-Protocol-Version": version,
         "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    return h


def modern_body(method: str, params: dict | None = None, request_id=1) -> dict:
    p = dict(params or {})
    p["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": p}


def test_discover_names_both_eras(eras):
    r = raw_request(eras.url, body=modern_body("server/discover"), headers=modern_headers("server/discover"))
    assert r.status == 200
    result = r.messages[0]["result"]
    assert result["resultType"] == "complete"
    assert MODERN in result["supportedVersions"] and "2025-11-25" in result["supportedVersions"]
    assert "tools" in result["capabilities"]
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-proxy"


def test_mcp_name_disagreeing_with_body_is_refused(eras):
    body = modern_body("tools/call", {"name": "alpha__echo", "arguments": {"message": "x"}}, request_id=7)
    r = raw_request(eras.url, body=body, headers=modern_headers("tools/call", "modern__shout"))
    assert r.status == 400
    error = r.messages[0]["error"]
    assert error["code"] == -32020
    assert "modern__shout" in error["message"] and "alpha__echo" in error["message"]
    assert r.messages[0]["id"] == 7


def test_missing_mcp_name_and_wrong_mcp_method_are_refused(eras):
    body = modern_body("tools/call", {"name": "alpha__echo", "arguments": {"message": "x"}})
    r = raw_request(eras.url, body=body, headers=modern_headers("tools/call"))
    assert r.status == 400 and r.messages[0]["error"]["code"] == -32020
    assert "Mcp-Name" in r.messages[0]["error"]["message"]
    r = raw_request(eras.url, body=body, headers=modern_headers("tools/list", "alpha__echo"))
    assert r.status == 400 and r.messages[0]["error"]["code"] == -32020
    assert "Mcp-Method" in r.messages[0]["error"]["message"]


def test_base64_mcp_name_matches(eras):
    import base64

    encoded = "=?base64?" + base64.b64encode(b"alpha__echo").decode() + "?="
    body = modern_body("tools/call", {"name": "alpha__echo", "arguments": {"message": "b64"}})
    r = raw_request(eras.url, body=body, headers=modern_headers("tools/call", encoded))
    assert r.status == 200, r.body
    assert r.messages[0]["result"]["content"][0]["text"] == "Echo: b64"


# `modern__in_region` mirrors `region` into Mcp-Param-Region and `tenant` (an integer) into
# Mcp-Param-Tenant (x-mcp-header); the SDK upstream refuses a call whose headers are missing or
# wrong, so a call that succeeds through the proxy shows the proxy sent them right.


def in_region_call(region, query: str, **extra) -> dict:
    return modern_body("tools/call", {"name": "modern__in_region",
                                      "arguments": {"region": region, "query": query, **extra}})


def test_mcp_param_headers_are_checked_against_the_body(eras):
    headers = modern_headers("tools/call", "modern__in_region")
    r = raw_request(eras.url, body=in_region_call("eu-west1", "q"),
                    headers={**headers, "Mcp-Param-Region": "us-east1"})
    assert r.status == 400, r.body
    error = r.messages[0]["error"]
    assert error["code"] == -32020
    assert "Mcp-Param-Region" in error["message"]
    assert "us-east1" in error["message"] and "eu-west1" in error["message"]

    r = raw_request(eras.url, body=in_region_call("eu-west1", "q"), headers=headers)
    assert r.status == 400 and r.messages[0]["error"]["code"] == -32020
    assert "Mcp-Param-Region" in r.messages[0]["error"]["message"]

    # A declared header whose argument is absent disagrees with the body too.
    r = raw_request(eras.url, body=in_region_call("eu-west1", "q"),
                    headers={**headers, "Mcp-Param-Region": "eu-west1", "Mcp-Param-Tenant": "5"})
    assert r.status == 400 and "Mcp-Param-Tenant" in r.messages[0]["error"]["message"]


def test_mcp_param_headers_that_match_reach_the_stateless_upstream(eras):
    import base64

    headers = modern_headers("tools/call", "modern__in_region")
    # Header names are case-insensitive, integers compare as numbers, and an undeclared
    # Mcp-Param header is none of the proxy's business.
    r = raw_request(eras.url, body=in_region_call("eu-west1", "select 1", tenant=42),
                    headers={**headers, "mcp-param-region": "eu-west1", "Mcp-Param-Tenant": "42.0",
                             "Mcp-Param-Unrelated": "x"})
    assert r.status == 200, r.body
    assert r.messages[0]["result"]["content"][0]["text"] == "eu-west1/42: select 1"

    encoded = "=?base64?" + base64.b64encode("Zürich".encode()).decode() + "?="
    r = raw_request(eras.url, body=in_region_call("Zürich", "q"),
                    headers={**headers, "Mcp-Param-Region": encoded})
    assert r.status == 200, r.body
    assert r.messages[0]["result"]["content"][0]["text"] == "Zürich/0: q"


def test_proxy_mirrors_mcp_param_headers_for_a_stateful_client(eras):
    """A stateful client sends no Mcp-Param headers; the proxy, as the upstream's client, must."""

    async def go():
        async with sdk_session(eras.url) as s:
            listed = {t.name: t for t in (await s.list_tools()).tools}
            assert listed["modern__in_region"].input_schema["properties"]["region"]["x-mcp-header"] == "Region"
            plain = await s.call_tool("modern__in_region", {"region": "eu-west1", "query": "a", "tenant": 7})
            wide = await s.call_tool("modern__in_region", {"region": " Zürich ", "query": "b"})
            return plain, wide

    plain, wide = run(go)
    assert not plain.is_error and text_of(plain) == "eu-west1/7: a"
    assert not wide.is_error and text_of(wide) == " Zürich /0: b"


def test_modern_sdk_client_mirrors_and_the_proxy_forwards(eras):
    async def go():
        async with modern_client(eras.url) as c:
            await c.list_tools()
            return await c.call_tool("modern__in_region", {"region": "ap-south1", "query": "c", "tenant": 3})

    result = run(go)
    assert not result.is_error and text_of(result) == "ap-south1/3: c"


def test_unsupported_version_gets_the_eras_error(eras):
    body = modern_body("tools/list")
    r = raw_request(eras.url, body=body, headers=modern_headers("tools/list", version="2099-01-01"))
    assert r.status == 400
    error = r.messages[0]["error"]
    assert error["code"] == -32022
    assert MODERN in error["data"]["supported"] and "2025-11-25" in error["data"]["supported"]
    assert error["data"]["requested"] == "2099-01-01"


def test_removed_methods_are_not_found_and_get_is_not_allowed(eras):
    for method in ("ping", "initialize", "logging/setLevel", "resources/subscribe"):
        r = raw_request(eras.url, body=modern_body(method, request_id=7), headers=modern_headers(method))
        assert r.status == 404, (method, r.status, r.body)
        assert r.messages[0]["error"]["code"] == -32601 and r.messages[0]["id"] == 7, (method, r.messages)
    r = raw_request(eras.url, method="GET", headers={"Accept": "text/event-stream", "MCP-Protocol-Version": MODERN})
    assert r.status == 405


def test_forged_request_state_is_refused(eras):
    params = {"name": "alpha__echo", "arguments": {"message": "x"}, "inputResponses": {},
              "requestState": "mcp-proxy-round.00.AAAAAAAAAAAAAAAAAAAAAAAA"}
    r = raw_request(eras.url, body=modern_body("tools/call", params), headers=modern_headers("tools/call", "alpha__echo"))
    assert r.status == 200
    assert r.messages[0]["error"]["code"] == -32602
    assert "requestState" in r.messages[0]["error"]["message"]


@pytest.mark.parametrize("attempt", range(4))
def test_input_required_round_raw(eras, attempt):
    """The bridge's rounds on the wire: the first call answers input_required with the
    upstream's sampling request; the retry with inputResponses gets the tool's result. Each
    request is a new connection, so retries land on either shard; the one that did not keep
    the round forwards it to the one that did (run a few times to cover both)."""
    caps = {"sampling": {}}
    first = modern_body("tools/call", {"name": "alpha__trigger-sampling-request",
                                       "arguments": {"prompt": "hi there", "maxTokens": 5}}, request_id=1)
    first["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = caps
    h = modern_headers("tools/call", "alpha__trigger-sampling-request")
    r = raw_request(eras.url, body=first, headers=h)
    assert r.status == 200, r.body
    result = r.messages[0]["result"]
    assert result["resultType"] == "input_required", result
    (key, request), = result["inputRequests"].items()
    assert request["method"] == "sampling/createMessage"
    retry = json.loads(json.dumps(first))
    retry["id"] = 2
    retry["params"]["inputResponses"] = {key: {"role": "assistant", "model": "m", "stopReason": "endTurn",
                                               "content": {"type": "text", "text": "raw-sampled"}}}
    retry["params"]["requestState"] = result["requestState"]
    r = raw_request(eras.url, body=retry, headers=h)
    assert r.status == 200, r.body
    final = r.messages[0]
    assert final["id"] == 2
    assert final["result"]["resultType"] == "complete"
    assert "raw-sampled" in final["result"]["content"][0]["text"]
    # A round is used once.
    r = raw_request(eras.url, body=retry, headers=h)
    assert r.messages[0]["error"]["code"] == -32602


# ---------------------------------------------------------------------------------------------
# subscriptions/listen


def next_message(stream) -> dict:
    """The next JSON-RPC message of an SSE stream, skipping events without one."""
    while True:
        ev = stream.next_event()
        assert ev is not None, "the listen stream ended"
        if "message" in ev:
            return ev["message"]


def test_listen_acknowledges_and_announces_tool_changes(spawner):
    """A listen stream is acknowledged first (tagged with the request id), then carries
    tools/list_changed when a server is added through the admin API."""
    token = "stateless-test-token-0123456789"
    alpha = spawner.everything()
    config = f'[proxy]\nadmin_token = "{token}"\n\n' + harness.servers_toml([("alpha", alpha.url)])
    proxy = spawner.proxy(config, shards=1)
    from test_relay import SseStream

    body = modern_body("subscriptions/listen", {"notifications": {"toolsListChanged": True,
                                                                  "resourceSubscriptions": ["x://y"]}},
                       request_id="sub-1")
    stream = SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=30)
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        ack = next_message(stream)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"
        # Only what the proxy honours is acknowledged.
        assert ack["params"]["notifications"] == {"toolsListChanged": True}
        beta = spawner.everything()
        req = urllib.request.Request(
            proxy.admin_url + "/api/v1/servers", method="POST",
            data=json.dumps({"name": "beta", "url": beta.url}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
        changed = next_message(stream)
        assert changed["method"] == "notifications/tools/list_changed"
        assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"
    finally:
        stream.abort()


def wait_for_log(proxy: harness.Proxy, needle: str, timeout: float = 20.0) -> str:
    """The proxy's stderr once it contains `needle` (a bounded wait, not a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = proxy.stderr_tail(400)
        if needle in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"the proxy never logged {needle!r}:\n{proxy.stderr_tail(60)}")


def next_update(stream) -> dict:
    """The next notifications/resources/updated of a listen stream (nothing else may come)."""
    message = next_message(stream)
    assert message["method"] == "notifications/resources/updated", message
    return message


def test_listen_delivers_resource_updates_and_unsubscribes_at_close(spawner):
    """A 2026-07-28 client names resources in resourceSubscriptions: the proxy grants the ones it
    can subscribe to upstream (not unknown servers), server-everything's updates arrive under the
    prefixed URI tagged with the listen id, a stream sharing the subscription keeps it when the
    other closes, and closing the last one unsubscribes upstream.

    server-everything sends updates only to the upstream session that switched them on (its
    toggle-subscriber-updates tool): the client's calls and listen streams share one bridge
    session (on two shards too: tests/test_stateless_shards.py)."""
    alpha = spawner.everything()
    proxy = spawner.proxy(harness.servers_toml([("alpha", alpha.url)]), shards=1)
    from test_relay import SseStream

    listed = raw_request(proxy.url, body=modern_body("resources/list"), headers=modern_headers("resources/list"))
    uris = [r["uri"] for r in listed.messages[0]["result"]["resources"]]
    uri = next(u for u in uris if u.startswith("alpha+demo://resource/static/document/"))

    def open_listen(request_id: str) -> SseStream:
        body = modern_body("subscriptions/listen",
                           {"notifications": {"resourceSubscriptions": ["nowhere+demo://x", uri, uri]}},
                           request_id=request_id)
        return SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=30)

    first = open_listen("watch-1")
    second = None
    try:
        assert first.status == 200 and first.content_type.startswith("text/event-stream")
        ack = next_message(first)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "watch-1"
        # The unknown server's URI is left out; the duplicate is granted once.
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [uri]}
        second = open_listen("watch-2")
        assert next_message(second)["params"]["notifications"] == {"resourceSubscriptions": [uri]}

        toggle = "alpha__toggle-subscriber-updates"
        r = raw_request(proxy.url, body=modern_body("tools/call", {"name": toggle, "arguments": {}}),
                        headers=modern_headers("tools/call", toggle))
        assert "Started simulated resource updated" in r.messages[0]["result"]["content"][0]["text"]

        for stream, sub in ((first, "watch-1"), (second, "watch-2")):
            update = next_update(stream)
            assert update["params"]["uri"] == uri
            assert update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == sub

        first.abort()
        # The upstream subscription is shared: the other stream keeps getting updates.
        for _ in range(2):
            assert next_update(second)["params"]["uri"] == uri
        assert "ended the upstream subscription" not in proxy.stderr_tail(400)

        second.abort()
        # The proxy notices the client left at its next write to the stream (an update or a
        # keep-alive comment), then unsubscribes upstream; the log line follows the upstream's answer.
        wait_for_log(proxy, f"ended the upstream subscription to {uri}")
    finally:
        first.abort()
        if second is not None:
            second.abort()


WATCHED = Path(__file__).resolve().parent / "fixtures" / "watched_server.py"


def test_listen_watches_a_stateless_upstream_through_its_own_listen(spawner):
    """Behind the proxy, a 2026-07-28 upstream (the SDK's MCPServer) is asked with its own
    subscriptions/listen: what it grants is granted, its updates arrive under the prefixed URI, and
    the upstream stream ends when the client's does."""
    port = harness.free_port()
    child = harness.spawn("watched", [sys.executable, str(WATCHED), str(port)])
    spawner.started.append(child)
    harness.wait_for_port(port, child)
    proxy = spawner.proxy(harness.servers_toml([("watched", f"http://127.0.0.1:{port}/mcp")]), shards=2)
    from test_relay import SseStream

    def call(tool: str, arguments: dict) -> str:
        name = f"watched__{tool}"
        r = raw_request(proxy.url, body=modern_body("tools/call", {"name": name, "arguments": arguments}),
                        headers=modern_headers("tools/call", name))
        return r.messages[0]["result"]["content"][0]["text"]

    # Discovery keeps a listen stream of its own for the server's list changes: count from it.
    baseline = int(call("listening", {}))
    uri = "watched+watched://doc"
    body = modern_body("subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}},
                       request_id="w")
    stream = SseStream(proxy.url, "POST", modern_headers("subscriptions/listen"), body, timeout=30)
    try:
        ack = next_message(stream)
        assert ack["params"]["notifications"] == {"resourceSubscriptions": [uri]}
        assert int(call("listening", {})) == baseline + 1
        assert call("touch", {"uri": "watched://doc"}) == "touched watched://doc"
        update = next_update(stream)
        assert update["params"]["uri"] == uri
        assert update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "w"
    finally:
        stream.abort()
    # The proxy notices the client left at its next write to the stream: this update.
    call("touch", {"uri": "watched://doc"})
    import time

    deadline = time.monotonic() + 20
    while int(call("listening", {})) != baseline:
        assert time.monotonic() < deadline, "the proxy kept its upstream listen stream open"
        time.sleep(0.1)


def test_listen_with_malformed_resource_subscriptions_is_refused(eras):
    body = modern_body("subscriptions/listen", {"notifications": {"resourceSubscriptions": "alpha+demo://x"}},
                       request_id="bad")
    r = raw_request(eras.url, body=body, headers=modern_headers("subscriptions/listen"))
    error = r.messages[0]["error"]
    assert error["code"] == -32602 and "must be an array" in error["message"]
    assert r.messages[0]["id"] == "bad"


def test_stateful_client_sees_only_its_eras_fields_from_a_stateless_upstream(eras):
    """A 2026-07-28 server names itself in every result's `_meta` and marks it `resultType`;
    a stateful client talks to the proxy (named in its `initialize`) and its era defines
    neither, so through the proxy the result carries only what the server computed."""
    modern = eras.started[1]
    direct = raw_request(modern.url, body=modern_body("tools/call", {"name": "whoami", "arguments": {}}),
                         headers=modern_headers("tools/call", "whoami"))
    upstream_result = direct.messages[0]["result"]
    assert "io.modelcontextprotocol/serverInfo" in upstream_result.get("_meta", {}), upstream_result
    assert upstream_result.get("resultType") == "complete", upstream_result

    session = harness.raw_initialize(eras.url)
    r, answer = harness.raw_call_tool(eras.url, session, "modern__whoami", {})
    assert answer is not None and "result" in answer, (r.status, r.body)
    result = answer["result"]
    assert harness.tool_text(result).startswith("m"), result
    assert "resultType" not in result and "ttlMs" not in result, result
    assert "io.modelcontextprotocol/serverInfo" not in result.get("_meta", {}), result
    assert "structuredContent" in result, result
