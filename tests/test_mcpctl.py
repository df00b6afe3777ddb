"""`mcpctl` as an operator meets it: hints from what the proxy knows, statuses that say what
a server is, the proxy's own tools listed as clients see them, and exit codes scripts can use
(5 for a name not found, 6 when `health` finds the proxy degraded).
"""

from __future__ import annotations

import json

import harness
from test_admin import TOKEN, config_toml, mcpctl, mcpctl_bin, ok_json, wait_until  # noqa: F401


def alpha_proxy(spawner, extra: str = "") -> harness.Proxy:
    alpha = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, None) + extra)
    wait_until(lambda: any(t["name"] == "alpha__echo" for t in ok_json(proxy, "tools", "ls")["items"]),
               what="alpha__echo listed")
    return proxy


def test_unknown_names_get_a_did_you_mean(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    route = mcpctl(proxy, "route", "echo")
    assert route.returncode == 5, route.stderr
    assert "did you mean alpha__echo" in route.stderr, route.stderr
    call = mcpctl(proxy, "call", "echo", "--args", '{"message":"hi"}', "--mcp-url", proxy.url)
    assert call.returncode == 5, call.stderr
    assert "unknown tool" in call.stderr and "did you mean alpha__echo" in call.stderr, call.stderr


def test_a_drained_server_shows_draining_not_down(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    assert mcpctl(proxy, "servers", "drain", "alpha").returncode == 0
    wait_until(lambda: ok_json(proxy, "servers", "ls")["servers"][0]["status"] == "draining",
               what="alpha's status draining")
    row = next(line for line in mcpctl(proxy, "servers", "ls").stdout.splitlines()
               if line.startswith("alpha"))
    assert row.split()[1] == "draining", row
    # Draining on purpose is not degraded.
    assert mcpctl(proxy, "health").returncode == 0


def test_tools_lists_include_the_proxys_own_tools(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    listed = {t["name"]: t for t in ok_json(proxy, "tools", "ls")["items"]}
    assert "proxy__orchestrate_workflow" in listed and "alpha__echo" in listed, sorted(listed)
    assert listed["proxy__orchestrate_workflow"]["server"] == "proxy"
    found = {t["name"] for t in ok_json(proxy, "tools", "search", "workflow")["items"]}
    assert "proxy__orchestrate_workflow" in found, found


def test_health_exits_6_when_degraded_and_still_prints(spawner, mcpctl_bin):
    dead = f"http://127.0.0.1:{harness.free_port()}/mcp"
    proxy = alpha_proxy(spawner, "\n" + harness.servers_toml({"gone": dead}))
    r = mcpctl(proxy, "health", "--json")
    assert r.returncode == 6, (r.returncode, r.stderr)
    report = json.loads(r.stdout)
    assert report["status"] == "degraded" and report["servers"]["gone"]["status"] != "up"
    table = mcpctl(proxy, "health")
    assert table.returncode == 6 and "gone" in table.stdout and "gone" in table.stderr


def test_running_an_unknown_workflow_exits_not_found(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    r = mcpctl(proxy, "workflows", "run", "nosuch", "--mcp-url", proxy.url)
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert "no saved workflow" in r.stderr


def test_output_formats_beside_json(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    as_json = mcpctl(proxy, "tools", "ls", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["items"]
    # The table cuts long descriptions to fit; wide keeps them whole.
    longest = max((t.get("description") or "" for t in json.loads(as_json.stdout)["items"]), key=len)
    assert len(longest) > 60
    assert longest.replace("\n", " ") not in mcpctl(proxy, "tools", "ls").stdout
    wide = mcpctl(proxy, "tools", "ls", "-o", "wide")
    assert wide.returncode == 0 and longest.replace("\n", " ") in wide.stdout
    as_yaml = mcpctl(proxy, "tools", "ls", "-o", "yaml")
    assert as_yaml.returncode == 0 and "alpha__echo" in as_yaml.stdout, as_yaml.stderr
    assert mcpctl(proxy, "tools", "ls", "-o", "xml").returncode == 2


def test_servers_update_changes_only_the_fields_given(spawner, mcpctl_bin):
    proxy = alpha_proxy(spawner)
    before = ok_json(proxy, "servers", "show", "alpha")
    r = mcpctl(proxy, "servers", "update", "alpha", "--timeout", "45s")
    assert r.returncode == 0, r.stderr
    after = ok_json(proxy, "servers", "show", "alpha")
    assert after["timeout_ms"] == 45000
    assert (after["url"], after["prefix"]) == (before["url"], before["prefix"])
    # A server added through the API keeps what it was given too.
    extra = spawner.everything()
    assert mcpctl(proxy, "servers", "add", "extra", "--url", extra.url, "--prefix", "ex").returncode == 0
    r = mcpctl(proxy, "servers", "update", "extra", "--timeout", "5s")
    assert r.returncode == 0, r.stderr
    shown = ok_json(proxy, "servers", "show", "extra")
    assert (shown["prefix"], shown["url"], shown["timeout_ms"]) == ("ex", extra.url, 5000)
    # Nothing to change is a usage error; --replace still replaces the whole description.
    assert mcpctl(proxy, "servers", "update", "extra").returncode == 2
    r = mcpctl(proxy, "servers", "update", "extra", "--replace", "--url", extra.url)
    assert r.returncode == 0, r.stderr
    assert ok_json(proxy, "servers", "show", "extra")["prefix"] == "extra"
