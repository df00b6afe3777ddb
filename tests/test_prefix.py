"""Per-server prefixes: `prefix = ""` exposes a server's own names; a clash is refused, never shadowed."""

from __future__ import annotations

import json
import subprocess
import time

from harness import INSPECTOR_BIN, sdk_session, text_of
from test_core_sdk import run


def _config(servers: list[tuple[str, str, str | None]]) -> str:
    out = []
    for name, url, prefix in servers:
        out.append(f'[[servers]]\nname = "{name}"\nurl = "{url}"\n')
        if prefix is not None:
            out.append(f'prefix = "{prefix}"\n')
    return "\n".join(out)


def test_empty_prefix_exposes_original_names_to_sdk_and_inspector(spawner, tmp_path):
    upstream = spawner.everything()
    proxy = spawner.proxy(_config([("everything", upstream.url, "")]))

    async def go():
        async with sdk_session(proxy.url) as s:
            # The proxy's own tools and resources are not the server's.
            tools = [t.name for t in (await s.list_tools()).tools if not t.name.startswith("proxy__")]
            resources = [str(r.uri) for r in (await s.list_resources()).resources
                         if not str(r.uri).startswith(("orchestration://", "servers://", "metrics://"))]
            echo = await s.call_tool("echo", {"message": "plain"})
            read = await s.read_resource(resources[0])
            return tools, resources, echo, read

    tools, resources, echo, read = run(go)
    assert "echo" in tools and "get-sum" in tools, tools
    assert not [t for t in tools if "__" in t], f"names still prefixed: {tools}"
    assert all(r.startswith("demo://") for r in resources), resources
    assert text_of(echo) == "Echo: plain"
    assert str(read.contents[0].uri) == resources[0]

    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin:/usr/local/bin", "CI": "true"}
    p = subprocess.run(
        [str(INSPECTOR_BIN), "--cli", proxy.url, "--transport", "http", "--method", "tools/call",
         "--tool-name", "get-sum", "--tool-args-json", '{"a": 2, "b": 3}', "--format", "json", "-q"],
        env=env, capture_output=True, text=True, timeout=90, start_new_session=True,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout)["result"]["content"][0]["text"] == "The sum of 2 and 3 is 5."


def test_clashing_unprefixed_server_is_refused_with_both_names(spawner):
    first, second = spawner.everything(), spawner.everything()
    proxy = spawner.proxy(_config([("first", first.url, ""), ("second", second.url, "")]))

    async def go():
        async with sdk_session(proxy.url) as s:
            return [t.name for t in (await s.list_tools()).tools]

    tools = run(go)
    assert len(tools) == len(set(tools)), f"a tool is listed twice: {sorted(tools)}"
    assert "echo" in tools
    deadline = time.time() + 5
    while "collides" not in proxy.stderr_tail(200) and time.time() < deadline:
        time.sleep(0.1)
    log = proxy.stderr_tail(200)
    clash = [line for line in log.splitlines() if "collides" in line]
    assert clash, log
    assert "first" in clash[0] and "second" in clash[0] and '"' in clash[0], clash[0]


def test_two_servers_with_one_prefix_is_a_config_error(spawner, tmp_path):
    from harness import PROXY_BIN

    cfg = tmp_path / "clash.toml"
    cfg.write_text(_config([("a", "http://127.0.0.1:1/mcp", "x"), ("b", "http://127.0.0.1:2/mcp", "x")]))
    p = subprocess.run([str(PROXY_BIN), "--config", str(cfg), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "clash.toml:" in p.stderr and 'both use the prefix "x"' in p.stderr, p.stderr
