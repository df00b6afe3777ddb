"""The control plane: the admin API through `mcpctl`, and the live registry.

- `mcpctl servers add` registers a real server-everything with a running proxy; a connected
  Python SDK client is told `notifications/tools/list_changed` and calls a new tool;
  `mcpctl servers rm` removes it and its tools go.
- The registry survives a restart (state_dir); a kill -9 during a burst of adds and removes
  leaves a loadable registry holding a prefix of the changes.
- Every command's `--json` output parses; a wrong token, an unreachable proxy and an unknown
  server each give a clear message and a non-zero exit.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import anyio
import pytest

import harness

MCPCTL = Path(os.environ.get("MCPCTL_BIN", harness.PROXY_BIN.parent / "mcpctl"))
TOKEN = "test-admin-token-0123456789abcdef"


def config_toml(servers: dict[str, str], state_dir: Path | None) -> str:
    proxy = f'[proxy]\nadmin_token = "{TOKEN}"\n'
    if state_dir is not None:
        proxy += f'state_dir = "{state_dir}"\n'
    return proxy + "\n" + harness.servers_toml(servers)


def mcpctl(proxy: harness.Proxy | None, *args: str, token: str | None = TOKEN,
           url: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env["MCPCTL_URL"] = url or (proxy.admin_url if proxy else "http://127.0.0.1:9")
    if token is not None:
        env["MCPCTL_TOKEN"] = token
    return subprocess.run([str(MCPCTL), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok_json(proxy: harness.Proxy, *args: str):
    r = mcpctl(proxy, *args, "--json")
    assert r.returncode == 0, f"mcpctl {' '.join(args)}: {r.returncode} {r.stderr}"
    return json.loads(r.stdout)


def health_json(proxy: harness.Proxy) -> dict:
    """`mcpctl health --json`, which exits 6 (and still prints) when the proxy is degraded."""
    r = mcpctl(proxy, "health", "--json")
    assert r.returncode in (0, 6), f"mcpctl health: {r.returncode} {r.stderr}"
    return json.loads(r.stdout)


def tool_names(proxy: harness.Proxy) -> set[str]:
    return {t["name"] for t in ok_json(proxy, "tools", "ls")["items"]}


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def mcpctl_bin():
    if not MCPCTL.exists():
        pytest.skip(f"{MCPCTL} missing: build it with `cargo build --release --workspace`")
    return MCPCTL


@pytest.fixture
def state_dir():
    with tempfile.TemporaryDirectory(prefix="mcp-proxy-state-") as d:
        yield Path(d)


def test_add_reaches_a_connected_client_and_rm_takes_it_away(spawner, mcpctl_bin, state_dir):
    alpha = spawner.everything()
    extra = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, state_dir))

    from mcp import types

    async def scenario() -> None:
        changed = anyio.Event()

        async def on_message(message) -> None:
            # SDK versions differ: the notification itself, or wrapped in a `root`.
            inner = getattr(message, "root", message)
            if type(inner).__name__ == "ToolListChangedNotification" or \
                    getattr(inner, "method", None) == "notifications/tools/list_changed":
                changed.set()

        async def all_tools(session) -> set[str]:
            names: set[str] = set()
            cursor = None
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                names |= {t.name for t in page.tools}
                cursor = getattr(page, "nextCursor", None) or getattr(page, "next_cursor", None)
                if not cursor:
                    return names

        async with harness.sdk_session(proxy.url, message_handler=on_message) as session:
            before = await all_tools(session)
            assert "alpha__echo" in before and not any(n.startswith("extra__") for n in before)
            # The SDK client listens on its GET stream; give it a moment to open.
            await anyio.sleep(0.5)
            r = await anyio.to_thread.run_sync(
                lambda: mcpctl(proxy, "servers", "add", "extra", "--url", extra.url))
            assert r.returncode == 0, r.stderr
            with anyio.fail_after(15):
                await changed.wait()
            after = await all_tools(session)
            assert "extra__echo" in after
            result = await session.call_tool("extra__echo", {"message": "live"})
            assert "live" in harness.text_of(result)

            changed = anyio.Event()
            r = await anyio.to_thread.run_sync(lambda: mcpctl(proxy, "servers", "rm", "extra"))
            assert r.returncode == 0, r.stderr
            with anyio.fail_after(15):
                await changed.wait()
            gone = await all_tools(session)
            assert not any(n.startswith("extra__") for n in gone)
            assert "alpha__echo" in gone

    anyio.run(scenario)
    assert "extra" not in {s["name"] for s in ok_json(proxy, "servers", "ls")["servers"]}
    # And the call path of mcpctl itself, through the proxy as an MCP client.
    r = mcpctl(proxy, "call", "alpha__echo", "--args", '{"message":"via mcpctl"}',
               "--mcp-url", proxy.url, "--json")
    assert r.returncode == 0, r.stderr
    assert "via mcpctl" in json.dumps(json.loads(r.stdout))


def test_registry_survives_a_restart(spawner, mcpctl_bin, state_dir):
    alpha = spawner.everything()
    extra = spawner.everything()
    text = config_toml({"alpha": alpha.url}, state_dir)
    proxy = spawner.proxy(text)
    r = mcpctl(proxy, "servers", "add", "extra", "--url", extra.url, "--prefix", "ex")
    assert r.returncode == 0, r.stderr
    assert mcpctl(proxy, "servers", "drain", "alpha").returncode == 0
    wait_until(lambda: "ex__echo" in tool_names(proxy), what="ex__echo listed")
    proxy.kill()

    again = spawner.proxy(text)
    servers = {s["name"]: s for s in ok_json(again, "servers", "ls")["servers"]}
    assert set(servers) == {"alpha", "extra"}
    assert servers["alpha"]["state"] == "draining"
    assert servers["extra"]["prefix"] == "ex"
    wait_until(lambda: "ex__echo" in tool_names(again), what="ex__echo after restart")
    assert not any(n.startswith("alpha__") for n in tool_names(again))
    assert mcpctl(again, "servers", "enable", "alpha").returncode == 0
    wait_until(lambda: "alpha__echo" in tool_names(again), what="alpha back")


def test_kill_9_during_a_burst_leaves_a_prefix(spawner, mcpctl_bin, state_dir):
    alpha = spawner.everything()
    text = config_toml({"alpha": alpha.url}, state_dir)
    proxy = spawner.proxy(text, shards=2)
    # The changes: add s0..s(n-1), removing every third one right after adding it.
    ops: list[tuple[str, str]] = []
    for i in range(60):
        ops.append(("add", f"s{i}"))
        if i % 3 == 2:
            ops.append(("rm", f"s{i}"))
    done: list[int] = []

    def api(method: str, path: str, body: dict | None = None) -> int:
        req = urllib.request.Request(
            f"{proxy.admin_url}/api/v1/{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status

    def burst() -> None:
        try:
            for k, (op, name) in enumerate(ops):
                if op == "add":
                    # Unreachable upstreams: discovery keeps retrying, which is load too.
                    api("POST", "servers", {"name": name, "url": f"http://127.0.0.1:9/{name}"})
                else:
                    api("DELETE", f"servers/{name}")
                done.append(k)
        except Exception:  # the proxy was killed mid-request
            pass

    t = threading.Thread(target=burst)
    t.start()
    wait_until(lambda: len(done) >= 20, what="some changes applied")
    os.kill(proxy.proc.pid, signal.SIGKILL)
    t.join(10)
    proxy.proc.wait(5)

    doc = json.loads((state_dir / "registry.json").read_text())
    saved = [s["name"] for s in doc["servers"]]
    # Replay every prefix of the changes; the saved set must equal one of them, at least as
    # long as the changes acknowledged before the kill.
    live: list[str] = []
    prefixes = [list(live)]
    for op, name in ops:
        if op == "add":
            live.append(name)
        else:
            live.remove(name)
        prefixes.append(list(live))
    matches = [k for k, p in enumerate(prefixes) if p == saved]
    assert matches, f"saved registry {saved} is no prefix of the changes"
    assert max(matches) >= len(done), f"acknowledged {len(done)} changes, saved {max(matches)}"

    again = spawner.proxy(text)
    names = [s["name"] for s in ok_json(again, "servers", "ls")["servers"]]
    assert names == ["alpha", *saved]


def test_every_json_output_parses_and_errors_say_how_to_fix(spawner, mcpctl_bin, state_dir):
    alpha = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, state_dir))
    for args in (["servers", "ls"], ["servers", "show", "alpha"], ["tools", "ls"],
                 ["tools", "search", "echo", "--mcp-url", proxy.url], ["health"], ["stats"], ["sessions"], ["shards"],
                 ["route", "alpha__echo"], ["reload"], ["version"],
                 ["top", "--once", "--interval", "0.2"]):
        ok_json(proxy, *args)
    assert ok_json(proxy, "route", "alpha__echo")["server"] == "alpha"
    found = ok_json(proxy, "tools", "search", "echo", "--mcp-url", proxy.url)["tools"]
    assert found and found[0]["name"] == "alpha__echo", found
    for shell in ("bash", "zsh", "fish"):
        r = mcpctl(proxy, "completions", shell)
        assert r.returncode == 0 and "mcpctl" in r.stdout
    # Tables for people.
    r = mcpctl(proxy, "servers", "ls")
    assert r.returncode == 0 and "alpha" in r.stdout and "NAME" in r.stdout
    r = mcpctl(proxy, "stats")
    assert r.returncode == 0 and "OWN P50 US" in r.stdout and "alpha" in r.stdout, r.stdout

    r = mcpctl(proxy, "servers", "ls", token="wrong")
    assert r.returncode == 4 and "MCPCTL_TOKEN" in r.stderr, r.stderr
    r = mcpctl(proxy, "servers", "ls", token=None)
    assert r.returncode == 4 and "MCPCTL_TOKEN" in r.stderr, r.stderr
    r = mcpctl(None, "servers", "ls", url=f"http://127.0.0.1:{harness.free_port()}")
    assert r.returncode == 3 and "is mcp-proxy running" in r.stderr, r.stderr
    r = mcpctl(proxy, "servers", "show", "nope")
    assert r.returncode == 5 and "alpha" in r.stderr, r.stderr
    r = mcpctl(proxy, "servers", "rm", "nope")
    assert r.returncode == 5 and "known servers: alpha" in r.stderr, r.stderr
    r = mcpctl(proxy, "route", "nope__tool")
    assert r.returncode == 5, r.stderr
    r = mcpctl(proxy, "servers", "add", "bad", "--url", "ftp://x")
    assert r.returncode == 2 and "http://" in r.stderr, r.stderr
    r = mcpctl(proxy, "call", "alpha__echo", "--args", "not json", "--mcp-url", proxy.url)
    assert r.returncode == 2 and "--args" in r.stderr, r.stderr
    r = mcpctl(proxy, "servers", "frobnicate")
    assert r.returncode == 2

    # /metrics and /healthz stay open; the API does not.
    for path in ("/metrics", "/healthz"):
        with urllib.request.urlopen(f"{proxy.admin_url}{path}", timeout=5) as resp:
            assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{proxy.admin_url}/api/v1/servers", timeout=5)
    assert e.value.code == 401


def test_sighup_reloads_the_config_without_dropping_sessions(spawner, mcpctl_bin, state_dir):
    alpha = spawner.everything()
    beta = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, state_dir))
    session = harness.raw_initialize(proxy.url)
    proxy.config_path.write_text(config_toml({"alpha": alpha.url, "beta": beta.url}, state_dir))
    os.kill(proxy.proc.pid, signal.SIGHUP)
    wait_until(lambda: "beta__echo" in tool_names(proxy), what="beta after SIGHUP")
    _, answer = harness.raw_call_tool(proxy.url, session, "beta__echo", {"message": "kept"})
    assert answer is not None and "kept" in harness.tool_text(answer["result"]), answer
    proxy.config_path.write_text(config_toml({"beta": beta.url}, state_dir))
    changes = ok_json(proxy, "reload")["changes"]
    assert changes["removed"] == ["alpha"]
    wait_until(lambda: not any(n.startswith("alpha__") for n in tool_names(proxy)),
               what="alpha gone after reload")


def test_a_reload_names_the_settings_that_wait_for_a_restart(spawner, mcpctl_bin, state_dir):
    """An operator edits [proxy] session_idle_timeout and adds a server in one edit, then reloads:
    the server is added live, and mcpctl, the admin API and the log each name the timeout as not
    applied until a restart, while the reload still succeeds."""
    alpha = spawner.everything()
    beta = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, state_dir))
    edited = config_toml({"alpha": alpha.url, "beta": beta.url}, state_dir).replace(
        "[proxy]\n", '[proxy]\nsession_idle_timeout = "5s"\n', 1)
    proxy.config_path.write_text(edited)

    r = mcpctl(proxy, "reload")
    assert r.returncode == 0, r.stderr
    assert "added beta" in r.stdout, r.stdout
    assert "not applied until restart: [proxy] session_idle_timeout\n" in r.stdout, r.stdout
    wait_until(lambda: "beta__echo" in tool_names(proxy), what="beta after the reload")
    log = proxy.stderr_tail(200)
    assert "WARN" in log and "not applied until restart: [proxy] session_idle_timeout" in log, log

    # Reloading again with only the waiting setting still changed: a success that does not
    # pretend nothing changed, since the timeout still waits for the restart.
    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200, answer
    assert answer["changes"] == {"added": [], "updated": [], "removed": []}, answer
    assert answer["not_applied_until_restart"] == ["[proxy] session_idle_timeout"], answer

    # Put back as started: nothing waits any more.
    proxy.config_path.write_text(config_toml({"alpha": alpha.url, "beta": beta.url}, state_dir))
    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200 and answer["not_applied_until_restart"] == [], answer


def test_command_line_overrides_are_not_reported_as_edits(spawner, mcpctl_bin, state_dir):
    """The file says listen, admin_listen and shards; the command line overrides all three
    (--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --shards 2). A reload of the unchanged file
    reports nothing waiting for a restart, by mcpctl, the admin API or SIGHUP's log."""
    alpha = spawner.everything()
    text = config_toml({"alpha": alpha.url}, state_dir).replace(
        "[proxy]\n",
        '[proxy]\nlisten = "127.0.0.1:1"\nadmin_listen = "127.0.0.1:2"\nshards = 3\n', 1)
    proxy = spawner.proxy(text, shards=2)
    assert proxy.port != 1 and not proxy.admin_url.endswith(":2")

    r = mcpctl(proxy, "reload")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reloaded:") and "restart" not in r.stdout, r.stdout
    assert ok_json(proxy, "reload")["not_applied_until_restart"] == []
    os.kill(proxy.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reload after SIGHUP done" in proxy.stderr_tail(200), what="the SIGHUP reload")
    assert "not applied until restart" not in proxy.stderr_tail(200)

    # A real edit of one of them is reported, next to the ones still overridden.
    proxy.config_path.write_text(text.replace("shards = 3", "shards = 4"))
    assert ok_json(proxy, "reload")["not_applied_until_restart"] == ["[proxy] shards"]


def test_a_reload_that_cannot_save_the_registry_changes_nothing(spawner, mcpctl_bin, state_dir):
    """The state directory has become unwritable (here: a file stands where it was). A reload
    that adds a server and raises max_body_bytes is refused with the reason, and nothing of it
    is in force: no new server, the old body limit. Once the directory is back, the same reload
    applies all of it."""
    alpha = spawner.everything()
    beta = spawner.everything()
    text = config_toml({"alpha": alpha.url}, state_dir)
    proxy = spawner.proxy(text.replace("[proxy]\n", "[proxy]\nmax_body_bytes = 1024\n", 1), shards=2)
    body = big_initialize()
    assert harness.raw_request(proxy.url, body=body).status == 413
    names_before = tool_names(proxy)

    shutil.rmtree(state_dir)
    state_dir.write_text("not a directory")
    try:
        edited = config_toml({"alpha": alpha.url, "beta": beta.url}, state_dir)
        proxy.config_path.write_text(edited.replace("[proxy]\n", "[proxy]\nmax_body_bytes = 65536\n", 1))
        status, answer = harness.admin_reload(proxy, TOKEN)
        assert status == 500 and answer.get("kind") == "state", (status, answer)
        assert str(state_dir) in answer["error"], answer
        r = mcpctl(proxy, "reload")
        assert r.returncode != 0 and str(state_dir) in r.stderr, (r.returncode, r.stdout, r.stderr)
        for _ in range(4):  # new connections, so both shards are asked
            assert harness.raw_request(proxy.url, body=body).status == 413
        assert tool_names(proxy) == names_before
        assert {s["name"] for s in ok_json(proxy, "servers", "ls")["servers"]} == {"alpha"}
    finally:
        # The fixture removes a directory; put one back whatever happened.
        state_dir.unlink()
        state_dir.mkdir()

    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200 and answer["proxy_limits"] is True, (status, answer)
    wait_until(lambda: any(n.startswith("beta__") for n in tool_names(proxy)), what="beta's tools")
    for _ in range(4):
        assert harness.raw_request(proxy.url, body=body).status == 200


def big_initialize() -> bytes:
    """An initialize of about 4 KiB (padding in `_meta`), which the proxy answers when let in."""
    params = harness.initialize_params("big-body-client")
    params["_meta"] = {"padding": "x" * 4000}
    return json.dumps(harness.rpc("initialize", params, request_id=1)).encode()


def test_a_reload_applies_proxy_body_limit_to_new_connections(spawner, mcpctl_bin, state_dir):
    """[proxy] max_body_bytes = 1024 refuses a 4 KiB POST with 413. The operator raises it to
    64 KiB in the file and reloads: the same POST on a new connection is answered (on either
    shard), the reload reports the [proxy] limits applied and nothing waiting for a restart, and
    a connection opened before the reload keeps the limit it started with. Lowering it again by
    `mcpctl reload` refuses the POST again."""
    alpha = spawner.everything()
    text = config_toml({"alpha": alpha.url}, state_dir)
    small = text.replace("[proxy]\n", "[proxy]\nmax_body_bytes = 1024\n", 1)
    proxy = spawner.proxy(small, shards=2)
    body = big_initialize()
    assert len(body) > 4000
    for _ in range(4):
        r = harness.raw_request(proxy.url, body=body)
        assert r.status == 413, (r.status, r.body[:300])
        assert "1024" in r.body.decode(errors="replace"), r.body[:300]

    # A keep-alive connection accepted before the reload, proven open by one small request.
    host, port = proxy.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    before = http.client.HTTPConnection(host, int(port), timeout=30)
    before.connect()
    before.auto_open = 0  # a closed connection must fail, not be silently replaced by a new one
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    try:
        before.request("POST", "/mcp", body=json.dumps(harness.rpc("initialize", harness.initialize_params())),
                       headers=headers)
        first = before.getresponse()
        first.read()
        assert first.status == 200

        proxy.config_path.write_text(text.replace("[proxy]\n", "[proxy]\nmax_body_bytes = 65536\n", 1))
        status, answer = harness.admin_reload(proxy, TOKEN)
        assert status == 200, answer
        assert answer["proxy_limits"] is True and answer["limits"] is False, answer
        assert answer["not_applied_until_restart"] == [], answer
        # New connections, so both shards are asked.
        for _ in range(4):
            r = harness.raw_request(proxy.url, body=body)
            assert r.status == 200, (r.status, r.body[:300])
            assert r.response_for(1)["result"]["serverInfo"], r.body[:300]

        before.request("POST", "/mcp", body=body, headers=headers)
        old = before.getresponse()
        old.read()
        assert old.status == 413, old.status
    finally:
        before.close()

    proxy.config_path.write_text(small)
    r = mcpctl(proxy, "reload")
    assert r.returncode == 0, r.stderr
    assert "[proxy] limits applied" in r.stdout and "restart" not in r.stdout, r.stdout
    log = proxy.stderr_tail(200)
    assert "reload: [proxy] connection limits now" in log and "not applied until restart" not in log, log
    for _ in range(4):
        assert harness.raw_request(proxy.url, body=body).status == 413
