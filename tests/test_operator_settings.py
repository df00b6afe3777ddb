"""What an operator changes and reads on a running proxy without restarting it: the log level
(every shard follows `mcpctl log-level`, and a reload of an edited `[proxy] log_level`), the
readiness probe (`/readyz`: 503 until every configured server was tried), the running
configuration as TOML (`mcpctl config view`, secrets redacted), the admin token found with no
setting on the proxy's machine or read from `admin_token_file`, `top` riding out a restart,
stdio servers under `servers replicas`, a missing stdio program named as such, `-o yaml`, and
shell completion of server and tool names asked of the proxy.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

import harness
from test_admin import (TOKEN, MCPCTL, config_toml, mcpctl, mcpctl_bin, ok_json,  # noqa: F401
                        state_dir, wait_until)


def debug_shards(proxy: harness.Proxy) -> set[str]:
    """The shards that wrote a DEBUG record so far."""
    text = proxy.child.stderr_path.read_text(errors="replace")
    return set(re.findall(r" DEBUG .*\[shard (\d+)\]", text))


def test_the_log_level_changes_on_every_shard_without_a_restart(spawner, mcpctl_bin):
    alpha = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, None), shards=2)
    assert mcpctl(proxy, "log-level").stdout.strip() == "info"
    for _ in range(6):
        harness.raw_initialize(proxy.url)
    assert debug_shards(proxy) == set()

    r = mcpctl(proxy, "log-level", "debug")
    assert r.returncode == 0, r.stderr
    assert "now debug" in r.stdout and "was info" in r.stdout, r.stdout
    assert ok_json(proxy, "log-level")["level"] == "debug"
    # Each new connection lands on one shard or the other: both log at debug now.
    for _ in range(60):
        harness.raw_initialize(proxy.url)
        if debug_shards(proxy) == {"0", "1"}:
            break
    assert debug_shards(proxy) == {"0", "1"}

    bad = mcpctl(proxy, "log-level", "loud")
    assert bad.returncode == 2 and "invalid log level" in bad.stderr, bad.stderr
    assert ok_json(proxy, "log-level")["level"] == "debug"


def test_a_reload_applies_an_edited_log_level_and_leaves_an_unchanged_one(spawner, mcpctl_bin):
    alpha = spawner.everything()
    text = config_toml({"alpha": alpha.url}, None)
    proxy = spawner.proxy(text.replace("[proxy]\n", '[proxy]\nlog_level = "info"\n', 1))
    assert mcpctl(proxy, "log-level", "debug").returncode == 0
    # The file did not change: the level set through the API stays.
    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200 and answer["log_level"] is None, answer
    assert ok_json(proxy, "log-level")["level"] == "debug"
    # The file changed it: the reload applies it, and does not call it restart-only.
    proxy.config_path.write_text(text.replace("[proxy]\n", '[proxy]\nlog_level = "warn"\n', 1))
    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200 and answer["log_level"] == "warn", answer
    assert "[proxy] log_level" not in answer["not_applied_until_restart"], answer
    assert ok_json(proxy, "log-level")["level"] == "warn"


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class SilentUpstream:
    """A fault: accepts connections and never answers, until closed (then every read fails)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/mcp"
        self.conns: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for c in self.conns:
            c.close()


def test_readyz_is_503_until_every_configured_server_was_tried(spawner):
    alpha = spawner.everything()
    silent = SilentUpstream()
    try:
        proxy = spawner.proxy(config_toml({"alpha": alpha.url, "silent": silent.url}, None))
        status, body = get(f"{proxy.admin_url}/readyz")
        assert status == 503 and body["waiting_for"] == ["silent"], body
        # Liveness is not readiness: the proxy is up meanwhile.
        assert get(f"{proxy.admin_url}/healthz")[0] == 200
        # Once discovery gives up on it (its 30 s timeout), it was tried: ready, though down.
        silent.close()
        wait_until(lambda: get(f"{proxy.admin_url}/readyz")[0] == 200, timeout=90,
                   what="/readyz 200 once silent failed")
        assert get(f"{proxy.admin_url}/readyz")[1] == {"ready": True, "servers": 2}
    finally:
        silent.close()


def test_config_view_shows_the_running_configuration_with_secrets_redacted(spawner, mcpctl_bin,
                                                                           state_dir):
    alpha = spawner.everything()
    extra = spawner.everything()
    secret = "Bearer upstream-secret-0451"
    text = config_toml({"alpha": alpha.url, "beta": alpha.url}, state_dir)
    text = text.replace('name = "alpha"', f'name = "alpha"\nheaders = {{ Authorization = "{secret}" }}')
    proxy = spawner.proxy(text)
    assert mcpctl(proxy, "servers", "add", "extra", "--url", extra.url, "--prefix", "ex").returncode == 0
    assert mcpctl(proxy, "servers", "rm", "beta").returncode == 0
    r = mcpctl(proxy, "config", "view")
    assert r.returncode == 0, r.stderr
    assert "upstream-secret" not in r.stdout and TOKEN not in r.stdout, r.stdout
    config = tomllib.loads(r.stdout)
    servers = {s["name"]: s for s in config["servers"]}
    assert sorted(servers) == ["alpha", "extra"], servers
    assert servers["alpha"]["headers"]["Authorization"] == "[redacted]"
    assert (servers["extra"]["url"], servers["extra"]["prefix"]) == (extra.url, "ex")
    assert config["proxy"]["admin_token"] == "[redacted]"
    # As running: the port the proxy resolved, not the file's (or the command line's) 0.
    assert config["proxy"]["listen"] == proxy.url.split("//")[1].split("/")[0]
    assert config["proxy"]["state_dir"] == str(state_dir)


def test_yaml_output_is_the_answer(spawner, mcpctl_bin):
    alpha = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url}, None))
    r = mcpctl(proxy, "servers", "ls", "-o", "yaml")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["servers"][0]["name"] == "alpha"


def run_mcpctl_without_a_token(proxy: harness.Proxy, *args: str) -> subprocess.CompletedProcess:
    return mcpctl(proxy, *args, token=None)


def test_mcpctl_finds_a_generated_token_on_the_same_machine(spawner, mcpctl_bin):
    alpha = spawner.everything()
    proxy = spawner.proxy('[proxy]\n\n' + harness.servers_toml({"alpha": alpha.url}))
    port = proxy.admin_url.rsplit(":", 1)[1]
    r = run_mcpctl_without_a_token(proxy, "health")
    assert r.returncode == 0, r.stderr
    left = [p for p in Path("/tmp").glob(f"mcp-proxy-{os.getuid()}/admin-{port}.token")] + \
        [p for p in Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")).glob(f"mcp-proxy/admin-{port}.token")]
    assert len(left) == 1 and left[0].stat().st_mode & 0o077 == 0, left
    # A stop takes it away: nothing of a stopped proxy lies around.
    proxy.child.proc.terminate()
    proxy.child.proc.wait(timeout=30)
    assert not left[0].exists()
    # A configured token is never written out.
    configured = spawner.proxy(config_toml({"alpha": alpha.url}, None))
    r = run_mcpctl_without_a_token(configured, "health")
    assert r.returncode == 4, r.stderr


def printed_by_a_proxy(tmp_path: Path, config: str, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    """Stdout and stderr of a proxy started with `config` and no admin token, once it has said
    where its generated token is, and what the file it named held; the proxy is stopped."""
    cfg = tmp_path / "proxy.toml"
    cfg.write_text(config)
    out_path = tmp_path / "stdout"
    argv = [harness.PROXY_BIN, "--config", cfg, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--shards", "1"]
    with open(out_path, "wb") as out:
        child = harness.spawn("proxy", argv, env=env, stdout=out)
    try:
        wait_until(lambda: "mcp-proxy admin token:" in out_path.read_text(), timeout=20,
                   what="the admin token line")
        stdout = out_path.read_text()
        named = re.search(r"^mcp-proxy admin token: in (\S+)$", stdout, re.M)
        held = Path(named.group(1)).read_text().strip() if named else ""
        return stdout, child.stderr_tail(400), held
    finally:
        child.kill()


def test_stdout_names_the_generated_token_file_never_the_token(tmp_path):
    """Stdout often ends up in a log (journald, `docker logs`): it names the file holding the
    generated token, and neither stdout nor the log carries the token itself."""
    stdout, stderr, token = printed_by_a_proxy(tmp_path, "[proxy]\n")
    assert re.search(r"^mcp-proxy admin token: in \S+/admin-\d+\.token$", stdout, re.M), stdout
    assert len(token) == 64
    assert token not in stdout and token not in stderr

    # With a state directory and no runtime directory to leave the token in, the state
    # directory's file is the one named.
    blocked = tmp_path / "runtime"
    blocked.mkdir()
    (blocked / "mcp-proxy").write_text("not a directory")
    state = tmp_path / "state"
    stdout, stderr, held = printed_by_a_proxy(tmp_path, f'[proxy]\nstate_dir = "{state}"\n',
                                        env={"XDG_RUNTIME_DIR": str(blocked)})
    token = (state / "admin-token").read_text().strip()
    assert len(token) == 64 and held == token
    assert f"mcp-proxy admin token: in {state / 'admin-token'}" in stdout, stdout
    assert token not in stdout and token not in stderr
    assert "could not be left for mcpctl" in stderr and "admin_token" in stderr, stderr

    # With neither, the token is written nowhere, and the operator is told what to set.
    stdout, stderr, _ = printed_by_a_proxy(tmp_path, "[proxy]\n", env={"XDG_RUNTIME_DIR": str(blocked)})
    assert "mcp-proxy admin token: generated but written nowhere" in stdout, stdout
    assert "MCP_PROXY_ADMIN_TOKEN" in stdout
    assert not re.search(r"\b[0-9a-f]{64}\b", stdout + stderr), (stdout, stderr)


def test_admin_token_file_is_read_and_both_settings_refused(spawner, mcpctl_bin, tmp_path):
    alpha = spawner.everything()
    token_file = tmp_path / "admin-token"
    token_file.write_text("from-a-file-0123456789abcdef\n")
    text = f'[proxy]\nadmin_token_file = "{token_file}"\n\n' + harness.servers_toml({"alpha": alpha.url})
    proxy = spawner.proxy(text)
    assert mcpctl(proxy, "health", token="from-a-file-0123456789abcdef").returncode == 0
    assert mcpctl(proxy, "health").returncode == 4
    both = tmp_path / "both.toml"
    both.write_text(f'[proxy]\nadmin_token = "{TOKEN}"\nadmin_token_file = "{token_file}"\n')
    check = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(both)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and "both set" in check.stderr, check.stderr
    token_file.write_text("short\n")
    missing = tmp_path / "short.toml"
    missing.write_text(f'[proxy]\nadmin_token_file = "{token_file}"\n')
    check = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(missing)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and "shorter than the 16 required" in check.stderr, check.stderr


def start_on_admin_port(config: Path, admin_port: int) -> harness.Proxy:
    argv = [harness.PROXY_BIN, "--config", config, "--listen", "127.0.0.1:0",
            "--admin-listen", f"127.0.0.1:{admin_port}", "--shards", "1"]
    child = harness.spawn("proxy", argv, stdout=subprocess.PIPE)
    url, admin_url = harness._read_ready_line(child, 20)
    return harness.Proxy(child, url, config, admin_url)


def test_top_keeps_asking_while_the_proxy_restarts(spawner, mcpctl_bin, tmp_path):
    alpha = spawner.everything()
    config = tmp_path / "proxy.toml"
    config.write_text(config_toml({"alpha": alpha.url}, None))
    admin_port = harness.free_port()
    proxy = start_on_admin_port(config, admin_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env.update(MCPCTL_URL=proxy.admin_url, MCPCTL_TOKEN=TOKEN)
    top = harness.spawn("mcpctl-top", [MCPCTL, "top", "--json", "--interval", "0.2"], env=env,
                        stdout=subprocess.PIPE)
    frames: list[dict] = []

    def read() -> None:
        for line in top.proc.stdout:
            frames.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(lambda: any("servers" in f for f in frames), what="a first frame")
        proxy.kill()
        wait_until(lambda: "error" in frames[-1], what="top saying the proxy does not answer")
        assert top.proc.poll() is None, "top gave up"
        again = start_on_admin_port(config, admin_port)
        try:
            seen = len(frames)
            wait_until(lambda: any("servers" in f for f in frames[seen:]), timeout=30,
                       what="frames again after the restart")
            assert top.proc.poll() is None
        finally:
            again.kill()
    finally:
        top.kill()
        proxy.kill()


def everything_stdio_toml(name: str) -> str:
    return (f'[[servers]]\nname = "{name}"\ncommand = "{harness.EVERYTHING_BIN}"\n'
            'args = ["stdio"]\n')


def test_servers_replicas_lists_a_stdio_server(spawner, mcpctl_bin):
    proxy = spawner.proxy(config_toml({}, None) + everything_stdio_toml("local"))
    wait_until(lambda: ok_json(proxy, "servers", "show", "local")["status"] == "up",
               timeout=60, what="the stdio server up")
    listed = ok_json(proxy, "servers", "replicas", "local")
    assert listed["drainable"] is False and "drains the whole server" in listed["note"], listed
    (only,) = listed["replicas"]
    assert "mcp-server-everything stdio" in only["command"] and only["status"] == "up", only
    table = mcpctl(proxy, "servers", "replicas", "local")
    assert table.returncode == 0 and "mcp-server-everything" in table.stdout, table.stdout
    # One replica alone still cannot be drained: the error says what to do instead.
    r = mcpctl(proxy, "servers", "drain", "local", "--replica", "0")
    assert r.returncode == 2 and "mcpctl servers drain local" in r.stderr, r.stderr


def test_a_missing_stdio_program_is_named_at_add_and_in_health(spawner, mcpctl_bin, tmp_path):
    alpha = spawner.everything()
    text = config_toml({"alpha": alpha.url}, None)
    proxy = spawner.proxy(text)
    r = mcpctl(proxy, "servers", "add", "ghost", "--command", "/opt/nowhere/mcp-ghost")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "ENOENT" in r.stderr and "/opt/nowhere/mcp-ghost" in r.stderr, r.stderr
    r = mcpctl(proxy, "servers", "add", "ghost", "--command", "mcp-ghost-not-installed")
    assert r.returncode == 2 and "not found in PATH" in r.stderr, r.stderr
    assert "ghost" not in {s["name"] for s in ok_json(proxy, "servers", "ls")["servers"]}
    # A reloaded file can still name one: health says what is missing, not a protocol error.
    proxy.config_path.write_text(text + '\n[[servers]]\nname = "ghost"\n'
                                        'command = "/opt/nowhere/mcp-ghost"\n')
    status, answer = harness.admin_reload(proxy, TOKEN)
    assert status == 200, answer

    def ghost_error() -> str:
        r = mcpctl(proxy, "health", "--json")
        return json.loads(r.stdout)["servers"].get("ghost", {}).get("error") or ""

    wait_until(lambda: ghost_error() != "", timeout=30, what="ghost's error in health")
    error = ghost_error()
    assert "ENOENT" in error and "/opt/nowhere/mcp-ghost" in error, error
    assert "broke the protocol" not in error, error


def complete(proxy: harness.Proxy, *words: str) -> list[str]:
    """The candidates mcpctl's dynamic completion offers for the last of `words` (fish's
    protocol: one candidate per line, a tab before any description)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env.update(COMPLETE="fish", MCPCTL_URL=proxy.admin_url, MCPCTL_TOKEN=TOKEN)
    r = subprocess.run([str(MCPCTL), "--", "mcpctl", *words], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("\t")[0] for line in r.stdout.splitlines()]


def test_completion_offers_server_and_tool_names_from_the_proxy(spawner, mcpctl_bin):
    alpha = spawner.everything()
    proxy = spawner.proxy(config_toml({"alpha": alpha.url, "alpine": alpha.url}, None))
    wait_until(lambda: any(t["name"] == "alpha__echo" for t in ok_json(proxy, "tools", "ls")["items"]),
               what="alpha__echo listed")
    assert sorted(complete(proxy, "servers", "show", "al")) == ["alpha", "alpine"]
    assert "alpha__echo" in complete(proxy, "route", "alpha__e")
    assert "servers" in complete(proxy, "ser")
