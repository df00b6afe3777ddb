"""Start-up of the proxy as an operator meets it: limits of the host, signals, configuration errors.

Each test runs the release binary and asserts what the operator sees: the exit status, the message
on stderr, or that the process stops when asked.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess

import pytest

import harness

# Generous: a start that fails must fail, and a stop must stop, well within it; a hang never ends.
EXIT_WITHIN = 20.0


def run_proxy(args: list[str], prefix: list[str] | None = None, timeout: float = EXIT_WITHIN):
    """Runs the proxy to its exit; a proxy still running after `timeout` is killed and fails the test."""
    child = harness.spawn("proxy", [*(prefix or []), harness.PROXY_BIN, *args],
                          env={"RUST_LOG": "info", "RUST_BACKTRACE": "0"})
    try:
        status = child.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"the proxy was still running after {timeout}s:\n{child.stderr_tail()}")
    return status, child.stderr_path.read_text(errors="replace")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_low_memlock_limit_fails_at_once_naming_the_limit_and_the_fix():
    # 64 KiB is a common container default; io_uring needs 512 KiB (even for root, glommio checks
    # the limit itself).
    status, stderr = run_proxy(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
                               prefix=["prlimit", "--memlock=65536:65536"])
    assert status == 1, stderr
    assert "locked-memory limit" in stderr and "64 KiB" in stderr, stderr
    assert "--ulimit memlock=-1" in stderr, stderr
    assert "LimitMEMLOCK=infinity" in stderr, stderr
    assert "Kubernetes" in stderr, stderr


@pytest.mark.skipif(shutil.which("prlimit") is None or shutil.which("setpriv") is None,
                    reason="prlimit or setpriv not installed")
def test_low_memlock_limit_fails_for_an_unprivileged_user_too():
    if not harness.PROXY_BIN.stat().st_mode & 0o001:
        pytest.skip("the binary is not executable by other users")
    probe = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            harness.PROXY_BIN, "--version"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip("nobody cannot run the binary here (a parent directory is not searchable)")
    status, stderr = run_proxy(["--listen", "127.0.0.1:0"],
                               prefix=["prlimit", "--memlock=65536:65536", "setpriv",
                                       "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
    assert status == 1, stderr
    assert "locked-memory limit" in stderr and "--ulimit memlock=-1" in stderr, stderr


def test_sigterm_during_start_up_stops_the_proxy():
    # An upstream that accepts connections and never answers keeps the first discovery round
    # (and so start-up) waiting for its 60s timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        config = harness.servers_toml({"silent": f"http://127.0.0.1:{port}/mcp"}, timeout="60s")
        cfg = harness._LOG_DIR / f"silent-{port}.toml"
        cfg.write_text(config)
        child = harness.spawn("proxy", [harness.PROXY_BIN, "--config", cfg, "--listen", "127.0.0.1:0",
                                        "--admin-listen", "127.0.0.1:0", "--shards", "1"],
                              env={"RUST_LOG": "info"}, stdout=subprocess.PIPE)
        # Wait until the proxy is connected to the silent upstream: start-up is under way.
        silent.settimeout(EXIT_WITHIN)
        conn, _ = silent.accept()
        child.proc.send_signal(signal.SIGTERM)
        try:
            stdout, _ = child.proc.communicate(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            child.kill()
            pytest.fail("SIGTERM during start-up was ignored")
        conn.close()
        # Stopped where it was: it never went on to serve.
        assert b"mcp-proxy ready" not in stdout, stdout
        assert child.proc.returncode == 0, child.stderr_tail()
        assert "stopped during start-up" in child.stderr_path.read_text(errors="replace")
    finally:
        silent.close()


# --- configuration errors, as the operator reads them at start -------------------------------


def start_with(tmp_path, text: str, *extra: str):
    """Starts the proxy on `text` as its configuration file; returns (exit status, stderr)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    return run_proxy(["--config", str(cfg), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                      *extra])


def test_type_error_names_the_field_and_an_example(tmp_path):
    status, err = start_with(tmp_path, '[proxy]\nshards = "two"\n')
    assert status == 1, err
    assert "config.toml:2:10" in err, err
    assert "`shards` in [proxy]" in err and "shards = 2" in err, err


def test_unknown_table_is_named_whole_with_a_suggestion(tmp_path):
    status, err = start_with(tmp_path, '[server]\nname = "a"\n')
    assert status == 1, err
    assert "unknown table `server`, expected one of `proxy`, `servers`" in err, err
    assert "did you mean `servers`?" in err, err


def test_near_miss_of_a_field_suggests_the_field(tmp_path):
    status, err = start_with(tmp_path, '[[servers]]\nname = "a"\nurl = "http://127.0.0.1:9/mcp"\n'
                                       'timout = "5s"\n')
    assert status == 1, err
    assert "unknown field `timout` in [[servers]]" in err and "did you mean `timeout`?" in err, err


def test_port_only_listen_on_the_command_line_says_what_to_write():
    status, err = run_proxy(["--listen", "8083"])
    assert status != 0, err
    assert '"127.0.0.1:8083"' in err, err


def test_host_name_listen_address_is_resolved():
    child = harness.spawn("proxy", [harness.PROXY_BIN, "--listen", "localhost:0", "--admin-listen",
                                    "localhost:0", "--shards", "1"], stdout=subprocess.PIPE)
    try:
        url = harness.wait_line(child, harness.READY_PREFIX, timeout=EXIT_WITHIN)
        assert url.startswith("http://127.0.0.1:"), url
    finally:
        child.kill()


def test_short_admin_token_is_refused(tmp_path):
    status, err = start_with(tmp_path, '[proxy]\nadmin_token = "secret"\n')
    assert status == 1, err
    assert "admin_token is 6 characters" in err, err
    assert "openssl rand -hex 32" in err, err
    child = harness.spawn("proxy", [harness.PROXY_BIN, "--listen", "127.0.0.1:0", "--admin-listen",
                                    "127.0.0.1:0"], env={"MCP_PROXY_ADMIN_TOKEN": "secret",
                                                         "RUST_BACKTRACE": "0"})
    try:
        status = child.proc.wait(timeout=EXIT_WITHIN)
    finally:
        child.kill()
    err = child.stderr_path.read_text(errors="replace")
    assert status == 1 and "MCP_PROXY_ADMIN_TOKEN is 6 characters" in err, err


def test_malformed_session_key_in_the_environment_is_refused():
    child = harness.spawn("proxy", [harness.PROXY_BIN, "--listen", "127.0.0.1:0", "--admin-listen",
                                    "127.0.0.1:0"], env={"MCP_PROXY_SESSION_KEY": "not-hex",
                                                         "RUST_BACKTRACE": "0"})
    try:
        status = child.proc.wait(timeout=EXIT_WITHIN)
    finally:
        child.kill()
    err = child.stderr_path.read_text(errors="replace")
    assert status == 1, err
    assert "MCP_PROXY_SESSION_KEY: session_key must be 64 hex digits" in err, err
    assert "openssl rand -hex 32" in err, err


def test_check_config_validates_without_starting(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[proxy]\nlisten = "127.0.0.1:8080"\n')
    r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(good)], capture_output=True,
                       text=True, timeout=EXIT_WITHIN)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{good}: OK"
    assert "mcp-proxy ready" not in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[proxy]\nshards = "two"\n')
    r = subprocess.run([str(harness.PROXY_BIN), "--check-config", str(bad)], capture_output=True,
                       text=True, timeout=EXIT_WITHIN)
    assert r.returncode == 1
    assert f"{bad}:2:10:" in r.stderr and "`shards`" in r.stderr, r.stderr


def test_missing_stdio_command_is_reported_as_missing(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[servers]]\nname = "gone"\ncommand = "/nonexistent/bin/mcp-server-x"\n\n'
                   '[[servers]]\nname = "unfound"\ncommand = "no-such-mcp-server-x"\n')
    child = harness.spawn("proxy", [harness.PROXY_BIN, "--config", cfg, "--listen", "127.0.0.1:0",
                                    "--admin-listen", "127.0.0.1:0", "--shards", "1"],
                          stdout=subprocess.PIPE)
    try:
        harness.wait_line(child, harness.READY_PREFIX, timeout=EXIT_WITHIN)
        err = child.stderr_path.read_text(errors="replace")
    finally:
        child.kill()
    assert "stdio server gone: cannot start /nonexistent/bin/mcp-server-x: no such file: " \
           "/nonexistent/bin/mcp-server-x (ENOENT)" in err, err
    assert "command `no-such-mcp-server-x` not found in PATH" in err, err
    assert "broke the protocol" not in err, err
