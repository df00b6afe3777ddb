"""The MCP Inspector CLI (a second, independent client implementation) against the proxy."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from harness import INSPECTOR_BIN


@pytest.fixture
def inspector_env(tmp_path):
    # The inspector writes a catalog under $HOME; keep it out of the real home.
    return dict(os.environ, HOME=str(tmp_path), NO_COLOR="1")


def inspect(url: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    argv = [str(INSPECTOR_BIN), "--cli", url, "--transport", "http", *args, "--format", "json", "-q"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90, start_new_session=True)


def test_inspector_lists_namespaced_tools(proxy_ab, inspector_env):
    p = inspect(proxy_ab.url, inspector_env, "--method", "tools/list")
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}"
    names = {t["name"] for t in json.loads(p.stdout)["result"]["tools"]}
    for expected in ("alpha__echo", "alpha__get-sum", "beta__echo", "beta__get-sum"):
        assert expected in names, sorted(names)
    assert not {n for n in names if "__" not in n}, f"un-namespaced tools: {sorted(names)}"


def test_inspector_calls_a_tool(proxy_ab, inspector_env):
    p = inspect(
        proxy_ab.url, inspector_env,
        "--method", "tools/call", "--tool-name", "alpha__get-sum", "--tool-args-json", '{"a": 19, "b": 23}',
    )
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-2000:]}"
    content = json.loads(p.stdout)["result"]["content"]
    assert content == [{"type": "text", "text": "The sum of 19 and 23 is 42."}]


def test_inspector_reports_unknown_tool(proxy_ab, inspector_env):
    p = inspect(proxy_ab.url, inspector_env, "--method", "tools/call", "--tool-name", "alpha__no-such-tool")
    assert p.returncode != 0, p.stdout
