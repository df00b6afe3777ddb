"""A stateful server's request sent on its GET stream reaches a 2026-07-28 client's call.

Topology: server-everything (stateful only) behind a proxy with two shards. Its
`get-roots-list` tool asks the client for its roots with `roots/list` sent on the session's
GET stream, not on the call's own stream, so nothing in the request says which call it is for.
The proxy hands it to the call in flight on that upstream session, whose `input_required` round
asks the 2026-07-28 client; the client's answer goes back to the server, and the tool returns the
client's roots. Before, nothing answered the request and the call hung until the server's own
60 s timeout; the client here gives up long before that (and the upstream timeout is longer
still), so a hang fails the test.
"""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp import Client

import harness
from harness import ACCEPT_BOTH, raw_request, text_of

MODERN = "2026-07-28"
ROOT = "file:///work/project"
# Well below the server's own 60 s wait for the roots, so a hang fails instead of passing late.
CLIENT_PATIENCE = 20.0


def proxy_with_everything(spawner) -> harness.Proxy:
    everything = spawner.everything()
    config = (f'[[servers]]\nname = "ev"\nurl = "{everything.url}"\ntimeout = "120s"\n')
    return spawner.proxy(config)


def meta() -> dict:
    return {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {"roots": {"listChanged": True}},
            "io.modelcontextprotocol/clientInfo": {"name": "raw-roots", "version": "1"}}


def call_roots_tool(url: str, extra: dict | None = None) -> dict:
    params = {"name": "ev__get-roots-list", "arguments": {}, **(extra or {}), "_meta": meta()}
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
    r = raw_request(url, body=body, timeout=CLIENT_PATIENCE,
                    headers={"Accept": ACCEPT_BOTH, "MCP-Protocol-Version": MODERN,
                             "Mcp-Method": "tools/call", "Mcp-Name": "ev__get-roots-list"})
    assert r.status == 200, r.body
    return r.messages[-1]


def test_roots_list_on_the_get_stream_becomes_the_calls_input_round(spawner):
    proxy = proxy_with_everything(spawner)
    first = call_roots_tool(proxy.url)
    result = first["result"]
    assert result["resultType"] == "input_required", first
    asked = list(result["inputRequests"].values())
    assert asked and all(r["method"] == "roots/list" for r in asked), asked
    answers = {key: {"roots": [{"uri": ROOT, "name": "project"}]} for key in result["inputRequests"]}
    final = call_roots_tool(proxy.url, {"inputResponses": answers,
                                        "requestState": result["requestState"]})
    for _ in range(3):
        if final["result"].get("resultType") != "input_required":
            break
        # The server may ask again (its own start-up sync also asks): answered the same way.
        answers = {k: {"roots": [{"uri": ROOT, "name": "project"}]}
                   for k in final["result"]["inputRequests"]}
        final = call_roots_tool(proxy.url, {"inputResponses": answers,
                                            "requestState": final["result"]["requestState"]})
    assert final["result"]["resultType"] == "complete", final
    text = final["result"]["content"][0]["text"]
    assert ROOT in text and "1 total" in text, text


def test_the_sdk_client_gets_its_roots_listed_through_the_proxy(spawner):
    proxy = proxy_with_everything(spawner)

    async def roots(context) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=ROOT, name="project")])

    async def go() -> str:
        with anyio.fail_after(CLIENT_PATIENCE):
            async with Client(proxy.url, list_roots_callback=roots) as c:
                return text_of(await c.call_tool("ev__get-roots-list", {}))

    text = anyio.run(go)
    assert ROOT in text, text
