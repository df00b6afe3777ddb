"""The admin API's defaults beside other tools: its port, and a generated token that survives a restart.

- without `admin_token`, a proxy with a `state_dir` keeps the token it makes in
  `{state_dir}/admin-token` (mode 0600) and reuses it at the next start;
- `mcpctl` reads the token from `MCPCTL_TOKEN_FILE` (or `--token-file`), so pointing it at that
  file once keeps it working across restarts;
- the admin port's default is not Prometheus's 9090, in the proxy and in `mcpctl`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import harness

MCPCTL = Path(os.environ.get("MCPCTL_BIN", harness.PROXY_BIN.parent / "mcpctl"))


def mcpctl(url: str, *args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
    env["MCPCTL_URL"] = url
    env.update(env_extra)
    return subprocess.run([str(MCPCTL), *args], env=env, capture_output=True, text=True, timeout=30)


def test_generated_token_is_kept_in_state_dir_across_restarts(tmp_path):
    state = tmp_path / "state"
    config = f'[proxy]\nstate_dir = "{state}"\n'
    first = harness.start_proxy(config, shards=1)
    token_file = state / "admin-token"
    try:
        assert token_file.exists(), "no admin-token file in the state directory"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        r = mcpctl(first.admin_url, "health", env_extra={"MCPCTL_TOKEN_FILE": str(token_file)})
        assert r.returncode == 0, r.stderr
    finally:
        first.kill()
    second = harness.start_proxy(config, shards=1)
    try:
        assert token_file.read_text().strip() == token, "the token changed at restart"
        # The same file, untouched, still opens the restarted proxy's API.
        r = mcpctl(second.admin_url, "health", env_extra={"MCPCTL_TOKEN_FILE": str(token_file)})
        assert r.returncode == 0, r.stderr
        r = mcpctl(second.admin_url, "--token-file", str(token_file), "health", env_extra={})
        assert r.returncode == 0, r.stderr
    finally:
        second.kill()


def test_token_file_readable_by_others_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    token_file = state / "admin-token"
    token_file.write_text("0123456789abcdef0123456789abcdef\n")
    token_file.chmod(0o644)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[proxy]\nstate_dir = "{state}"\n')
    child = harness.spawn("proxy", [harness.PROXY_BIN, "--config", cfg, "--listen", "127.0.0.1:0",
                                    "--admin-listen", "127.0.0.1:0", "--shards", "1"],
                          env={"RUST_BACKTRACE": "0"})
    try:
        status = child.proc.wait(timeout=20)
    finally:
        child.kill()
    err = child.stderr_path.read_text(errors="replace")
    assert status == 1, err
    assert "readable by other users" in err and "chmod 600" in err, err


def test_admin_port_default_is_not_prometheus_port():
    r = subprocess.run([str(MCPCTL), "--help"], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")})
    assert "http://127.0.0.1:8085" in r.stdout, r.stdout
    assert "9090" not in r.stdout
