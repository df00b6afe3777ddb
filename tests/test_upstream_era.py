"""The era the proxy speaks to a server that speaks both, chosen per client session.

Topology: FastMCP 4.x (PyPI `fastmcp`, tests/fixtures/fastmcp_server.py), which answers
`server/discover` with 2026-07-28 and `initialize` with a session, behind a proxy with two
shards. Its `era` tool says which era a request came in (a session id or not); `ask_name`
elicits from the client with `ctx.elicit`, which FastMCP does only in a stateful session.

Under `era = "auto"` a stateful client (the Python SDK's `ClientSession`) gets a stateful
upstream session, so elicitation works through the proxy as it does direct; a 2026-07-28
client (the SDK's `mcp.Client`) keeps the stateless route. `era = "2025-11-25"` and
`era = "2026-07-28"` force one era for every client, set in the file or through `mcpctl`.

Resource subscriptions: the Python SDK's MCPServer in session mode
(tests/fixtures/dual_era_server.py) speaks both eras and declares `resources.subscribe`; a
stateful client's `resources/subscribe` through the proxy gets the server's
`notifications/resources/updated`, as it does direct (the stateless era has no such method).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client

import harness
from harness import sdk_session, text_of
from test_admin import TOKEN, mcpctl, mcpctl_bin, ok_json, wait_until  # noqa: F401

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fastmcp_server.py"
DUAL = Path(__file__).resolve().parent / "fixtures" / "dual_era_server.py"
MODERN = "2026-07-28"


@pytest.fixture(scope="module")
def fastmcp():
    port = harness.free_port()
    child = harness.spawn("fastmcp", [sys.executable, str(FIXTURE), str(port)])
    try:
        harness.wait_for_port(port, child, timeout=60)
        yield harness.Upstream(child, port)
    finally:
        child.kill()


def proxy_for(spawner, url: str, era: str | None = None) -> harness.Proxy:
    line = f'era = "{era}"\n' if era else ""
    config = (f'[proxy]\nadmin_token = "{TOKEN}"\n\n[[servers]]\nname = "fm"\nurl = "{url}"\n'
              f'timeout = "30s"\n{line}')
    proxy = spawner.proxy(config)
    wait_until(lambda: any(t["name"] == "fm__era" for t in ok_json(proxy, "tools", "ls")["items"]),
               timeout=30, what="fm__era listed")
    return proxy


async def elicit_name(context, params) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"value": "Ada"})


def stateful_calls(url: str, tools: list[str]) -> list[str]:
    """What each tool answers a stateful client (initialize, session) that can elicit."""
    async def go():
        async with sdk_session(url, elicitation_callback=elicit_name) as s:
            return [text_of(await s.call_tool(t, {})) for t in tools]

    return anyio.run(go)


def modern_calls(url: str, tools: list[str], client_name: str = "era-test") -> list[str]:
    """What each tool answers a 2026-07-28 client (`mcp.Client`, no session) that can elicit."""
    async def go():
        info = types.Implementation(name=client_name, version="1")
        async with Client(url, elicitation_callback=elicit_name, client_info=info) as c:
            return [text_of(await c.call_tool(t, {})) for t in tools]

    return anyio.run(go)


def test_a_stateful_client_elicits_through_a_stateful_upstream_session(spawner, fastmcp):
    direct = stateful_calls(fastmcp.url, ["era", "ask_name"])
    assert direct == ["stateful", "accept:Ada"]
    proxy = proxy_for(spawner, fastmcp.url)
    assert stateful_calls(proxy.url, ["fm__era", "fm__ask_name"]) == direct


def test_a_2026_client_keeps_the_stateless_route(spawner, fastmcp):
    proxy = proxy_for(spawner, fastmcp.url)
    # FastMCP elicits only in a session: a 2026-07-28 client is told so, direct and through.
    direct = modern_calls(fastmcp.url, ["era", "ask_name"])
    assert direct[0] == f"stateless:{MODERN}"
    assert modern_calls(proxy.url, ["fm__era", "fm__ask_name"]) == direct


def test_era_in_the_file_forces_each_era(spawner, fastmcp):
    old = proxy_for(spawner, fastmcp.url, era="2025-11-25")
    # The 2026-07-28 client is asked through the bridge's input_required round.
    assert modern_calls(old.url, ["fm__era", "fm__ask_name"]) == ["stateful", "accept:Ada"]
    assert stateful_calls(old.url, ["fm__era"]) == ["stateful"]
    new = proxy_for(spawner, fastmcp.url, era=MODERN)
    assert stateful_calls(new.url, ["fm__era"]) == [f"stateless:{MODERN}"]
    assert modern_calls(new.url, ["fm__era"]) == [f"stateless:{MODERN}"]


def test_mcpctl_sets_the_era_for_sessions_opened_after(spawner, fastmcp, mcpctl_bin):
    proxy = proxy_for(spawner, fastmcp.url)
    assert ok_json(proxy, "servers", "show", "fm")["era"] == "auto"
    r = mcpctl(proxy, "servers", "update", "fm", "--era", "2025-11-25")
    assert r.returncode == 0, r.stderr
    assert ok_json(proxy, "servers", "show", "fm")["era"] == "2025-11-25"
    wait_until(lambda: any(t["name"] == "fm__era" for t in ok_json(proxy, "tools", "ls")["items"]),
               timeout=30, what="fm__era listed again")
    # A client the proxy has not served yet: its bridge session is opened under the new era.
    assert modern_calls(proxy.url, ["fm__era"], client_name="after-update") == ["stateful"]
    bad = mcpctl(proxy, "servers", "update", "fm", "--era", "2025-03-26")
    assert bad.returncode != 0
    assert 'write one of "auto", "2025-11-25", "2026-07-28"' in bad.stderr, bad.stderr


def test_a_misspelled_era_is_refused_with_the_spellings(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[servers]]\nname = "fm"\nurl = "http://127.0.0.1:9/mcp"\nera = "stateful"\n')
    r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert f"{cfg}:4:7:" in r.stderr, r.stderr
    assert 'era = "stateful" is not an era' in r.stderr and '"auto", "2025-11-25", "2026-07-28"' in r.stderr
    stdio = tmp_path / "stdio.toml"
    stdio.write_text('[[servers]]\nname = "t"\ncommand = "true"\nera = "2026-07-28"\n')
    r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(stdio)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "stateful era only" in r.stderr, r.stderr


def updates_after_subscribing(url: str, uri: str) -> list[str]:
    """The `resources/updated` URIs a stateful client gets after subscribing to `uri`."""
    async def go():
        seen: list[str] = []
        got = anyio.Event()

        async def on_message(message) -> None:
            m = getattr(message, "root", message)
            if getattr(m, "method", "") == "notifications/resources/updated":
                seen.append(str(m.params.uri))
                got.set()

        async with sdk_session(url, message_handler=on_message) as s:
            await s.subscribe_resource(uri)
            with anyio.move_on_after(20):
                await got.wait()
        return seen

    return anyio.run(go)


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
def test_a_stateful_client_subscribes_through_a_dual_era_server(spawner):
    port = harness.free_port()
    child = harness.spawn("dual-era", [sys.executable, str(DUAL), str(port)])
    spawner.started.append(child)
    harness.wait_for_port(port, child, timeout=60)
    url = f"http://127.0.0.1:{port}/mcp"
    assert updates_after_subscribing(url, "demo://watched") == ["demo://watched"]
    config = f'[proxy]\nadmin_token = "{TOKEN}"\n\n[[servers]]\nname = "dual"\nurl = "{url}"\n'
    proxy = spawner.proxy(config)
    wait_until(lambda: ok_json(proxy, "servers", "ls")["servers"][0]["status"] == "up",
               timeout=30, what="dual up")
    assert updates_after_subscribing(proxy.url, "dual+demo://watched") == ["dual+demo://watched"]
