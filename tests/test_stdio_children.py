"""What a stdio child gets from the proxy (its environment) and what the proxy takes from it (stderr).

Environment: the proxy runs with MCP_PROXY_ADMIN_TOKEN, MCP_PROXY_SESSION_KEY and an unrelated
secret-looking variable set; a real server-everything started over stdio reports its environment
through its `get-env` tool. Expected of the proxy:
- no child sees an `MCP_PROXY_*` variable or the value of the admin token or session key,
  whatever the server's `env_inherit` says, for servers from a TOML file, from an `mcpServers`
  JSON file and added through the admin API;
- by default (`env_inherit = "base"`) a child inherits only the base set (PATH, HOME, USER,
  LANG, ...), so the unrelated variable stays out; `env_allow` names more (exact, or `PREFIX*`);
  `env_inherit = "all"` passes everything but the proxy's own; `env_inherit = "none"` nothing;
- the server's `env` table always reaches the child.

stderr: tests/fixtures/noisy_stderr_stdio.py misbehaves on its stderr on request. Expected:
- bytes that are not UTF-8 are logged (replaced) and the child keeps serving: the same process
  answers the next call, which itself writes to stderr;
- a 300 MiB line without a newline keeps the proxy's peak memory (VmHWM) far below its size, the
  logged line is cut and says by how much, and the child keeps serving;
- a child flooding stderr gets a bounded number of lines into the proxy's log, plus a line
  counting what was dropped;
- control characters (ESC, CR, BEL, BS) reach the text log escaped, never raw.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import anyio
import pytest

import harness
from harness import EVERYTHING_BIN, PROXY_BIN, TESTS_DIR, sdk_session, text_of
from test_stdio import alive, descendants, wait_until

NOISY = TESTS_DIR / "fixtures" / "noisy_stderr_stdio.py"
PYTHON = sys.executable


def q(s) -> str:
    return json.dumps(str(s))


def stdio_server(name: str, command, args=(), env: dict | None = None, extra: str = "") -> str:
    lines = ["[[servers]]", f"name = {q(name)}", f"command = {q(command)}",
             "args = [" + ", ".join(q(a) for a in args) + "]"]
    if env:
        lines.append("env = { " + ", ".join(f"{k} = {q(v)}" for k, v in env.items()) + " }")
    return "\n".join(lines) + "\n" + extra


class Proxies:
    """Proxies started by one test; each killed with every process it started afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.children: list[harness.Child] = []

    def start(self, config: str | Path, env: dict[str, str] | None = None, shards: int = 1,
              suffix: str = ".toml", log_format: str = "text") -> harness.Proxy:
        if not PROXY_BIN.exists():
            pytest.fail(f"{PROXY_BIN} missing: build it with `cargo build --release -p mcp-proxy`")
        if isinstance(config, Path):
            path = config
        else:
            path = self.tmp / f"proxy-{uuid.uuid4().hex[:6]}{suffix}"
            path.write_text(config)
        argv = [PROXY_BIN, "--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--shards", str(shards), "--log-format", log_format]
        child = harness.spawn("proxy", argv, env={"RUST_LOG": "info", **(env or {})}, stdout=subprocess.PIPE)
        self.children.append(child)
        url, admin = harness._read_ready_line(child, 30)
        return harness.Proxy(child, url, path, admin)

    def close(self) -> None:
        for child in reversed(self.children):
            victims = descendants(child.proc.pid) if child.proc.poll() is None else {}
            child.kill()
            for pid, start in victims.items():
                if alive(pid, start):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass


@pytest.fixture
def proxies(tmp_path):
    p = Proxies(tmp_path)
    try:
        yield p
    finally:
        p.close()


def log_of(proxy: harness.Proxy) -> bytes:
    try:
        return proxy.child.stderr_path.read_bytes()
    except OSError:
        return b""


def tail(data: bytes, n: int = 40) -> str:
    return "\n".join(data.decode(errors="replace").splitlines()[-n:])


async def call(url: str, tool: str, args: dict | None = None, timeout: float = 60) -> str:
    async with sdk_session(url) as s:
        with anyio.fail_after(timeout):
            result = await s.call_tool(tool, args or {}, read_timeout_seconds=timeout)
    assert not result.is_error, f"{tool}: {text_of(result)}"
    return text_of(result)


# ---------------------------------------------------------------------------------------------
# Environment


class Secrets:
    """The proxy's environment for these tests: its own secrets, an unrelated secret-looking
    variable, and a variable of the base set with a known value."""

    def __init__(self) -> None:
        self.admin_token = "adm-" + secrets.token_hex(16)
        self.session_key = secrets.token_hex(32)
        self.unrelated = "unrelated-" + secrets.token_hex(8)
        self.env = {
            "MCP_PROXY_ADMIN_TOKEN": self.admin_token,
            "MCP_PROXY_SESSION_KEY": self.session_key,
            "MCP_PROXY_SOMETHING_ELSE": "proxy-own-" + secrets.token_hex(4),
            "CLOUD_API_SECRET": self.unrelated,
            "LANG": "C.UTF-8",
        }

    def check_clean(self, text: str, env: dict[str, str], where: str) -> None:
        """Nothing of the proxy's own reaches the child, in names or in values."""
        assert self.admin_token not in text, f"{where}: the admin token reached the child"
        assert self.session_key not in text, f"{where}: the session key reached the child"
        own = sorted(k for k in env if k.startswith("MCP_PROXY_"))
        assert not own, f"{where}: the proxy's own variables reached the child: {own}"


def get_env(url: str, server: str) -> tuple[str, dict[str, str]]:
    text = anyio.run(call, url, f"{server}__get-env")
    return text, json.loads(text)


@pytest.mark.timeout(120)
def test_stdio_children_never_see_the_proxys_secrets(proxies):
    s = Secrets()
    proxy = proxies.start(stdio_server("base", EVERYTHING_BIN, ["stdio"], env={"CHILD_SET": "from-env-table"}),
                          env=s.env)
    text, env = get_env(proxy.url, "base")
    s.check_clean(text, env, "env_inherit default")
    assert env.get("CHILD_SET") == "from-env-table", "the server's env table did not reach the child"
    assert "CLOUD_API_SECRET" not in env, "by default an unrelated variable of the proxy reached the child"
    for name in ("PATH", "HOME", "LANG"):
        assert env.get(name) == os.environ.get(name, s.env.get(name)), f"base variable {name} not inherited"


@pytest.mark.timeout(120)
def test_the_proxys_own_environment_block_no_longer_holds_its_secrets(proxies):
    """A child runs as the proxy's user, so it could read the proxy's /proc/PID/environ (the block
    written at exec, whatever unsetenv did since): the values are gone from it once read, and they
    still work (the admin token authenticates)."""
    s = Secrets()
    proxy = proxies.start(stdio_server("base", EVERYTHING_BIN, ["stdio"]), env=s.env)
    block = Path(f"/proc/{proxy.proc.pid}/environ").read_bytes()
    assert s.admin_token.encode() not in block, "the admin token is readable in /proc/PID/environ"
    assert s.session_key.encode() not in block, "the session key is readable in /proc/PID/environ"
    assert s.unrelated.encode() in block, "a variable that is not the proxy's secret was touched"
    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers",
                                 headers={"Authorization": f"Bearer {s.admin_token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


@pytest.mark.timeout(120)
def test_env_allow_and_env_inherit_choose_what_else_a_child_gets(proxies):
    s = Secrets()
    config = (stdio_server("allow", EVERYTHING_BIN, ["stdio"], extra='env_allow = ["CLOUD_*"]\n')
              + stdio_server("all", EVERYTHING_BIN, ["stdio"], env={"CHILD_SET": "all-too"},
                             extra='env_inherit = "all"\n')
              # Nothing inherited: PATH (for `node`) comes from the env table alone.
              + stdio_server("none", EVERYTHING_BIN, ["stdio"], env={"PATH": os.environ["PATH"]},
                             extra='env_inherit = "none"\n'))
    proxy = proxies.start(config, env=s.env)

    text, env = get_env(proxy.url, "allow")
    s.check_clean(text, env, "env_allow")
    assert env.get("CLOUD_API_SECRET") == s.unrelated, "env_allow = [\"CLOUD_*\"] did not pass CLOUD_API_SECRET"
    assert env.get("PATH") == os.environ["PATH"]

    text, env = get_env(proxy.url, "all")
    s.check_clean(text, env, "env_inherit = all")
    assert env.get("CLOUD_API_SECRET") == s.unrelated
    assert env.get("CHILD_SET") == "all-too"

    text, env = get_env(proxy.url, "none")
    s.check_clean(text, env, "env_inherit = none")
    assert "HOME" not in env and "CLOUD_API_SECRET" not in env and "LANG" not in env, sorted(env)


@pytest.mark.timeout(120)
def test_children_from_mcpservers_json_and_the_admin_api_get_the_same_rule(proxies, tmp_path):
    s = Secrets()
    cfg = tmp_path / "claude_desktop_config.json"
    cfg.write_text(json.dumps({"mcpServers": {
        "fromjson": {"command": str(EVERYTHING_BIN), "args": ["stdio"], "env": {"CHILD_SET": "json"}},
    }}))
    proxy = proxies.start(cfg, env=s.env)
    text, env = get_env(proxy.url, "fromjson")
    s.check_clean(text, env, "mcpServers JSON")
    assert env.get("CHILD_SET") == "json"
    assert "CLOUD_API_SECRET" not in env
    assert env.get("PATH") == os.environ["PATH"]

    body = json.dumps({"name": "added", "command": str(EVERYTHING_BIN), "args": ["stdio"],
                       "env": {"CHILD_SET": "admin"}}).encode()
    request = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {s.admin_token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 201, r.read()
    found = wait_until(lambda: _has_tool(proxy.url, "added__get-env"), 20, 0.3)
    assert found, f"the server added through the admin API never offered its tools:\n{tail(log_of(proxy))}"
    text, env = get_env(proxy.url, "added")
    s.check_clean(text, env, "added through the admin API")
    assert env.get("CHILD_SET") == "admin"
    assert "CLOUD_API_SECRET" not in env


def _has_tool(url: str, name: str) -> bool:
    async def go():
        async with sdk_session(url) as session:
            return any(t.name == name for t in await harness.list_all_tools(session))

    return anyio.run(go)


def test_env_rule_mistakes_are_refused_at_load(tmp_path):
    """An allow-list entry naming the proxy's own variables, or an unknown inherit mode, is a
    configuration error that names the fix."""
    for extra, needle in [('env_allow = ["MCP_PROXY_ADMIN_TOKEN"]\n', "MCP_PROXY_"),
                          ('env_allow = ["MCP_PROXY_*"]\n', "MCP_PROXY_"),
                          ('env_inherit = "some"\n', "env_inherit")]:
        path = tmp_path / f"bad-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(stdio_server("x", PYTHON, [NOISY], extra=extra))
        out = subprocess.run([str(PROXY_BIN), "--config", str(path), "--listen", "127.0.0.1:0",
                              "--admin-listen", "127.0.0.1:0"], capture_output=True, timeout=20)
        assert out.returncode != 0, f"{extra!r} was accepted"
        assert needle in out.stderr.decode(errors="replace"), out.stderr.decode(errors="replace")


# ---------------------------------------------------------------------------------------------
# stderr


def noisy(proxies: Proxies, log_format: str = "text") -> harness.Proxy:
    return proxies.start(stdio_server("noisy", PYTHON, [NOISY]), log_format=log_format)


def pid_of(url: str) -> int:
    return json.loads(anyio.run(call, url, "noisy__whoami"))["pid"]


@pytest.mark.timeout(60)
def test_invalid_utf8_on_stderr_neither_stops_the_log_nor_kills_the_child(proxies):
    proxy = noisy(proxies)
    pid = pid_of(proxy.url)
    assert anyio.run(call, proxy.url, "noisy__bad_bytes") == "ok"
    # The next calls write to stderr before answering: a reader that gave up would make that
    # write fail (EPIPE) and end the child.
    for i in range(3):
        assert anyio.run(call, proxy.url, "noisy__echo", {"message": f"after-{i}"}) == f"Echo: after-{i}"
    assert pid_of(proxy.url) == pid, "the child was restarted after writing invalid UTF-8"
    logged = wait_until(lambda: b"echo after-2" in log_of(proxy), 5)
    assert logged, f"stderr lines after the invalid bytes were not logged:\n{tail(log_of(proxy))}"
    log = log_of(proxy)
    assert b"after-bad-bytes" in log
    line = next(ln for ln in log.splitlines() if b"bad-bytes-start" in ln)
    assert b"bad-bytes-end" in line and b"\xef\xbf\xbd" in line, line  # replaced, not dropped
    line.decode()  # the log itself stays UTF-8


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.timeout(120)
def test_a_300_mib_stderr_line_does_not_grow_the_proxy(proxies):
    proxy = noisy(proxies)
    pid = pid_of(proxy.url)
    before = vm_kb(proxy.proc.pid, "VmHWM")
    written = json.loads(anyio.run(call, proxy.url, "noisy__long_line", {"mb": 300}, 100))["written"]
    assert written == 300 << 20
    assert anyio.run(call, proxy.url, "noisy__echo", {"message": "post-long"}) == "Echo: post-long"
    assert pid_of(proxy.url) == pid, "the child was restarted after its long line"
    assert wait_until(lambda: b"after-long-line" in log_of(proxy), 10), tail(log_of(proxy))
    peak = vm_kb(proxy.proc.pid, "VmHWM")
    # A memory bound, far below the 300 MiB written: the line is cut, not held.
    assert peak < 100 * 1024, f"proxy peak RSS {peak} kB (before the line: {before} kB)"
    cut = [ln for ln in log_of(proxy).splitlines() if b"xxxxxxxx" in ln]
    assert len(cut) == 1, f"{len(cut)} log lines for one stderr line"
    assert len(cut[0]) < 64 * 1024, f"a logged line of {len(cut[0])} bytes"
    m = re.search(rb"\[truncated (\d+) bytes\]", cut[0])
    assert m, cut[0][-200:]
    kept = cut[0].count(b"x")
    assert int(m.group(1)) + kept >= written - 16, (int(m.group(1)), kept, written)


@pytest.mark.timeout(90)
def test_a_flooding_child_gets_a_bounded_log_and_a_dropped_count(proxies):
    proxy = noisy(proxies)
    started = time.monotonic()
    lines = json.loads(anyio.run(call, proxy.url, "noisy__flood", {"seconds": 3}, 60))["lines"]

    def counts() -> tuple[int, int]:
        log = log_of(proxy)
        dropped = sum(int(n) for n in re.findall(rb"dropped (\d+) lines? of stderr", log))
        return log.count(b"flood-line"), dropped

    # Every line is either logged or counted as dropped; the last count comes within a few
    # seconds of the flood's end.
    wait_until(lambda: sum(counts()) == lines, 10)
    elapsed = time.monotonic() - started
    logged, dropped = counts()
    assert dropped > 0, f"no dropped-count line after a flood of {lines} lines:\n{tail(log_of(proxy))}"
    assert logged + dropped == lines, f"logged {logged} + dropped {dropped} != written {lines}"
    # Bounded by a rate (lines per second, plus a burst), not by what the child writes.
    bound = 1000 + 100 * elapsed
    assert lines > 10 * bound, f"the child wrote only {lines} lines: the flood proves nothing"
    assert logged <= bound, f"{logged} of {lines} flood lines logged in {elapsed:.1f} s"
    assert anyio.run(call, proxy.url, "noisy__echo", {"message": "post-flood"}) == "Echo: post-flood"


@pytest.mark.timeout(60)
def test_control_characters_from_stderr_are_escaped_in_the_text_log(proxies):
    proxy = noisy(proxies)
    assert anyio.run(call, proxy.url, "noisy__control") == "ok"
    assert wait_until(lambda: b"control-start" in log_of(proxy), 5), tail(log_of(proxy))
    log = log_of(proxy)
    line = next(ln for ln in log.split(b"\n") if b"control-start" in ln)
    for raw in (b"\x1b", b"\r", b"\x07", b"\x08"):
        assert raw not in log, f"raw {raw!r} in the log line {line!r}"
    assert b"\\x1b[31mred" in line and b"over\\rwritten" in line and b"back\\x08space" in line, line
    assert line.endswith(b"end"), line
