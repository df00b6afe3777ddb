"""Writes bench/semantic/catalog.json: the tools the proxy lists with the real servers the tests
use behind it (server-everything, server-memory, server-filesystem, mcp-server-time,
mcp-server-git) and its own proxy__ tools, exactly as a client sees them, with each tool's
server and tags. The evaluation (bench/semantic/README.md) ranks over this list.

    tests/.venv/bin/python bench/semantic/catalog.py
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import harness  # noqa: E402
from harness import NODE_BIN, raw_initialize, raw_request, rpc  # noqa: E402

VENV_BIN = ROOT / "tests" / ".venv" / "bin"
TAGS = {"memory": ["knowledge-graph"], "filesystem": ["files"], "git": ["vcs"], "time": ["clock"]}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="catalog-"))
    (tmp / "files").mkdir()
    repo = tmp / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    config = f"""
[[servers]]
name = "everything"
command = "{NODE_BIN / 'mcp-server-everything'}"
args = ["stdio"]

[[servers]]
name = "memory"
command = "{NODE_BIN / 'mcp-server-memory'}"
env = {{ MEMORY_FILE_PATH = "{tmp / 'memory.jsonl'}" }}
tags = {json.dumps(TAGS['memory'])}

[[servers]]
name = "filesystem"
command = "{NODE_BIN / 'mcp-server-filesystem'}"
args = ["{tmp / 'files'}"]
tags = {json.dumps(TAGS['filesystem'])}

[[servers]]
name = "time"
command = "{VENV_BIN / 'mcp-server-time'}"
tags = {json.dumps(TAGS['time'])}

[[servers]]
name = "git"
command = "{VENV_BIN / 'mcp-server-git'}"
args = ["--repository", "{repo}"]
tags = {json.dumps(TAGS['git'])}
"""
    proxy = harness.start_proxy(config, shards=1)
    try:
        sid = raw_initialize(proxy.url)
        tools: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            req = rpc("tools/list", {})
            tools = raw_request(proxy.url, body=req, session=sid).response_for(req["id"])["result"]["tools"]
            servers = {t["name"].split("__")[0] for t in tools}
            if {"everything", "memory", "filesystem", "time", "git", "proxy"} <= servers:
                break
            time.sleep(0.5)
        out = []
        for t in tools:
            server = t["name"].split("__")[0]
            out.append({"server": server, "tags": TAGS.get(server, []), "tool": t})
        path = ROOT / "bench" / "semantic" / "catalog.json"
        path.write_text(json.dumps({"tools": out}, indent=1) + "\n")
        print(f"{path}: {len(out)} tools from {sorted({o['server'] for o in out})}")
    finally:
        proxy.kill()
        harness.kill_all()


if __name__ == "__main__":
    main()
