"""The proxy as an official-SDK client sees it: alpha and beta (server-everything) served as one.

Each test drives `mcp.ClientSession` (Python SDK 2.x) over Streamable HTTP against the proxy
started by the `proxy_ab` fixture (two upstreams, --shards 2).
"""

from __future__ import annotations

import json
import re

import anyio
import mcp_types as types
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

import harness
from harness import sdk_session, text_of

SERVERS = ("alpha", "beta")
SUPPORTED_VERSIONS = {"2025-11-25", "2025-06-18", "2025-03-26"}


def run(fn, *args):
    return anyio.run(fn, *args)


async def _answer_sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    """A stand-in LLM: answers with the last word of the prompt it was sent, reversed and tagged.

    server-everything's trigger-sampling-request sends `Resource trigger-sampling-request context: PROMPT`.
    Sleeping makes two concurrent sampling requests overlap in time, so ids the proxy must rewrite
    (both upstreams number their requests from 0) are outstanding together.
    """
    await anyio.sleep(0.3)
    text = "".join(c.text for c in _contents(params.messages[-1].content) if c.type == "text")
    word = text.split()[-1]
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled:{word[::-1]}"),
        model="test-model",
        stop_reason="endTurn",
    )


def _contents(content):
    return content if isinstance(content, list) else [content]


# The capabilities every client in this module declares (sampling included), so a direct
# connection to an upstream and a connection through the proxy are asked for the same tool set.
CLIENT = {"sampling_callback": _answer_sampling}


def test_initialize_reports_server_and_capabilities(proxy_ab):
    async def go():
        async with streamable_http_client(proxy_ab.url) as (read, write):
            from mcp import ClientSession

            async with ClientSession(read, write, **CLIENT) as s:
                return await s.initialize()

    init = run(go)
    assert init.protocol_version in SUPPORTED_VERSIONS
    assert init.server_info.name, "serverInfo.name is empty"
    assert init.server_info.version, "serverInfo.version is empty"
    caps = init.capabilities
    assert caps.tools is not None, "proxy does not declare the tools capability"
    assert caps.prompts is not None, "proxy does not declare the prompts capability"
    assert caps.resources is not None, "proxy does not declare the resources capability"


def _tool_names_direct(url: str) -> list[str]:
    async def go():
        async with sdk_session(url, **CLIENT) as s:
            return [t.name for t in (await harness.list_all_tools(s))]

    return run(go)


def test_tools_list_merges_both_servers_namespaced(proxy_ab):
    direct = {name: _tool_names_direct(proxy_ab.upstreams[name].url) for name in SERVERS}
    assert "echo" in direct["alpha"] and "get-sum" in direct["alpha"], direct["alpha"]

    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            return await harness.list_all_tools(s)

    tools = run(go)
    # The proxy's own tools (proxy__*) are not any server's.
    names = [t.name for t in tools if not t.name.startswith("proxy__")]
    expected = {f"{server}__{tool}" for server in SERVERS for tool in direct[server]}
    assert len(names) == len(set(names)), f"duplicate tool names: {sorted(names)}"
    missing, extra = sorted(expected - set(names)), sorted(set(names) - expected)
    assert not missing and not extra, f"missing through the proxy: {missing}; not upstream: {extra}"
    assert len(names) == sum(len(v) for v in direct.values())
    too_long = [n for n in names if len(n) > 64]
    assert not too_long, f"tool names over 64 chars: {too_long}"
    # Schemas survive the trip: get-sum still needs a and b.
    get_sum = next(t for t in tools if t.name == "alpha__get-sum")
    assert set(get_sum.input_schema.get("required", [])) == {"a", "b"}


def test_call_tools_on_each_server(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            out = {}
            for server in SERVERS:
                echo = await s.call_tool(f"{server}__echo", {"message": f"hello from {server}"})
                total = await s.call_tool(f"{server}__get-sum", {"a": 19, "b": 23 if server == "alpha" else 24})
                out[server] = (echo, total)
            return out

    out = run(go)
    for server in SERVERS:
        echo, total = out[server]
        assert not echo.is_error and text_of(echo) == f"Echo: hello from {server}"
        assert not total.is_error
    assert text_of(out["alpha"][1]) == "The sum of 19 and 23 is 42."
    assert text_of(out["beta"][1]) == "The sum of 19 and 24 is 43."


def test_prompts_list_and_get(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            listed = [p.name for p in (await s.list_prompts()).prompts]
            simple = await s.get_prompt("alpha__simple-prompt")
            with_args = await s.get_prompt("beta__args-prompt", {"city": "Paris"})
            return listed, simple, with_args

    listed, simple, with_args = run(go)
    for server in SERVERS:
        assert f"{server}__simple-prompt" in listed, listed
        assert f"{server}__args-prompt" in listed, listed
    assert simple.messages[0].content.text == "This is a simple prompt without arguments."
    assert with_args.messages[0].content.text == "What's weather in Paris?"


ARCH = "demo://resource/static/document/architecture.md"


def test_resources_list_and_read(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            listed = [str(r.uri) for r in (await s.list_resources()).resources]
            read = await s.read_resource(f"beta+{ARCH}")
            return listed, read

    listed, read = run(go)
    for server in SERVERS:
        assert f"{server}+{ARCH}" in listed, listed
    assert len(read.contents) == 1
    content = read.contents[0]
    assert content.text.startswith("# Everything Server"), content.text[:80]
    assert str(content.uri).endswith(ARCH)


def test_progress_notifications_reach_the_client(proxy_ab):
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            return await s.call_tool(
                "alpha__trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
            )

    result = run(go)
    assert not result.is_error, text_of(result)
    assert "Long running operation completed" in text_of(result)
    values = [v for v, _ in progress]
    assert len(values) == 4, progress
    assert all(a < b for a, b in zip(values, values[1:])), f"progress not increasing: {values}"
    assert values[-1] == 4 and progress[-1][1] == 4


def test_sampling_round_trip_through_proxy(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            return await s.call_tool("alpha__trigger-sampling-request", {"prompt": "say olleh", "maxTokens": 20})

    result = run(go)
    assert not result.is_error, text_of(result)
    assert "sampled:hello" in text_of(result)


def test_concurrent_sampling_from_both_servers_is_not_mixed_up(proxy_ab):
    """Both upstreams number their server-to-client requests from 0; answers must go back right."""
    results: dict[str, types.CallToolResult] = {}

    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:

            async def one(server: str) -> None:
                results[server] = await s.call_tool(
                    f"{server}__trigger-sampling-request", {"prompt": f"word {server}-token", "maxTokens": 20}
                )

            async with anyio.create_task_group() as tg:
                for server in SERVERS:
                    tg.start_soon(one, server)

    run(go)
    for server in SERVERS:
        text = text_of(results[server])
        assert f"sampled:{f'{server}-token'[::-1]}" in text, (server, text)


def test_cancel_in_flight_call_then_session_still_works(proxy_ab):
    """Abandoning a call (anyio cancel scope) sends notifications/cancelled; the proxy accepts it
    and the same session keeps working."""
    posted: list[tuple[str | None, int]] = []

    async def record(response) -> None:
        request = response.request
        if request.method == "POST":
            try:
                method = json.loads(request.content).get("method")
            except (ValueError, AttributeError):
                method = None
            posted.append((method, response.status_code))

    async def go():
        from mcp import ClientSession

        client = create_mcp_http_client()
        client.event_hooks["response"].append(record)
        async with client, streamable_http_client(proxy_ab.url, http_client=client) as (read, write):
            async with ClientSession(read, write, **CLIENT) as s:
                await s.initialize()
                started = anyio.current_time()
                with anyio.move_on_after(1.0) as scope:
                    await s.call_tool("alpha__trigger-long-running-operation", {"duration": 30, "steps": 30})
                elapsed = anyio.current_time() - started
                echo = await s.call_tool("alpha__echo", {"message": "still here"})
                other = await s.call_tool("beta__get-sum", {"a": 1, "b": 2})
                await s.send_ping()
                return scope.cancelled_caught, elapsed, echo, other

    cancelled, elapsed, echo, other = run(go)
    assert cancelled and elapsed < 5
    assert text_of(echo) == "Echo: still here"
    assert text_of(other) == "The sum of 1 and 2 is 3."
    cancels = [status for method, status in posted if method == "notifications/cancelled"]
    assert cancels, f"the SDK sent no notifications/cancelled: {posted}"
    assert all(status == 202 for status in cancels), posted


def test_unknown_names_are_invalid_params(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url, **CLIENT) as s:
            errors = {}
            for kind, call in (
                ("tool", lambda: s.call_tool("alpha__no-such-tool", {})),
                ("unprefixed tool", lambda: s.call_tool("echo", {"message": "x"})),
                ("prompt", lambda: s.get_prompt("gamma__simple-prompt")),
                ("resource", lambda: s.read_resource("gamma+demo://resource/static/document/architecture.md")),
            ):
                with pytest.raises(MCPError) as info:
                    await call()
                errors[kind] = info.value
            return errors

    errors = run(go)
    for kind, err in errors.items():
        assert err.code == -32602, (kind, err.code, err.message)
    assert "alpha__no-such-tool" in errors["tool"].message
    assert re.search(r"\becho\b", errors["unprefixed tool"].message)
    assert "gamma__simple-prompt" in errors["prompt"].message
