"""One configured upstream (`ghost`) is down: the proxy still serves the other and says which failed."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from harness import free_port, raw_initialize, raw_request, rpc, sdk_session, text_of


@pytest.fixture
def alpha_and_ghost(spawner):
    alpha = spawner.everything()
    ghost_url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    proxy = spawner.proxy([("alpha", alpha.url), ("ghost", ghost_url)], shards=2)
    return proxy


def test_down_upstream_does_not_break_the_rest(alpha_and_ghost):
    url = alpha_and_ghost.url

    async def go():
        async with sdk_session(url) as s:
            tools = [t.name for t in (await s.list_tools()).tools]
            echo = await s.call_tool("alpha__echo", {"message": "alive"})
            errors = {}
            with pytest.raises(MCPError) as info:
                await s.call_tool("ghost__echo", {"message": "boo"})
            errors["tool"] = info.value
            with pytest.raises(MCPError) as info:
                await s.get_prompt("ghost__simple-prompt")
            errors["prompt"] = info.value
            with pytest.raises(MCPError) as info:
                await s.read_resource("ghost+demo://x")
            errors["resource"] = info.value
            # The session is still good after the errors.
            again = await s.call_tool("alpha__get-sum", {"a": 40, "b": 2})
            return tools, echo, errors, again

    tools, echo, errors, again = anyio.run(go)
    assert "alpha__echo" in tools and "alpha__get-sum" in tools, tools
    assert not [t for t in tools if t.startswith("ghost__")], tools
    assert text_of(echo) == "Echo: alive"
    # ghost's tools were never listed, so its names are unknown tools.
    assert errors["tool"].code == -32602, (errors["tool"].code, errors["tool"].message)
    assert "ghost__echo" in errors["tool"].message
    for kind in ("prompt", "resource"):
        assert "ghost" in errors[kind].message, (kind, errors[kind].code, errors[kind].message)
    assert text_of(again) == "The sum of 40 and 2 is 42."


def test_down_upstream_raw_initialize_and_list(alpha_and_ghost):
    """Raw HTTP view: initialize answers 200 and the merged list holds alpha's tools only."""
    url = alpha_and_ghost.url
    session = raw_initialize(url)
    req = rpc("tools/list")
    r = raw_request(url, body=req, session=session)
    answer = r.response_for(req["id"])
    assert r.status == 200 and answer and "result" in answer, (r.status, r.body[:300])
    names = {t["name"] for t in answer["result"]["tools"]}
    assert "alpha__echo" in names and not any(n.startswith("ghost__") for n in names), names
