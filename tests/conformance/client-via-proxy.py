"""A conformance "client" that is mcp-proxy's upstream side: the suite checks the proxy's client.

`conformance client --command "python client-via-proxy.py" --scenario NAME` starts the scenario's
test server and runs this script with the server's URL as the last argument (and the scenario in
MCP_CONFORMANCE_SCENARIO). The script starts mcp-proxy with that URL as its only upstream
(`prefix = ""`, so names reach the proxy's client unchanged), then drives the proxy as an ordinary
MCP client would, so every request the test server sees comes from the proxy's upstream client:

- initialize: the proxy initializes the server (discovery) before it says it is ready; a Python
  SDK session then lists the tools through the proxy.
- tools_call: `mcpctl call add_numbers --args {"a":2,"b":3}` must answer 5.
- sse-retry: `mcpctl call test_reconnection`; the server ends the call's SSE stream after a
  priming event (retry 500 ms) and answers on the GET stream it expects the proxy to reopen with
  Last-Event-ID.
- elicitation-sep1034-client-defaults: a Python SDK session that accepts elicitations with the
  requested schema's defaults calls `test_client_elicitation_defaults`; the proxy relays the
  server's elicitation/create to it and its answer back.

Exit status 0 when the call through the proxy gave the expected answer. The proxy dies with this
script (PR_SET_PDEATHSIG), even when the suite kills it on a timeout.

Environment: MCP_PROXY_BIN and MCPCTL_BIN override the binaries (default target/release/).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROXY_BIN = Path(os.environ.get("MCP_PROXY_BIN", REPO / "target" / "release" / "mcp-proxy"))
MCPCTL_BIN = Path(os.environ.get("MCPCTL_BIN", PROXY_BIN.parent / "mcpctl"))
READY = "mcp-proxy ready: "
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_proxy(upstream: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    config = workdir / "proxy.toml"
    config.write_text(
        '[proxy]\nlisten = "127.0.0.1:0"\nadmin_listen = "off"\n\n'
        f'[[servers]]\nname = "suite"\nurl = "{upstream}"\nprefix = ""\ntimeout = "20s"\n')
    log = open(workdir / "proxy.log", "wb")
    proc = subprocess.Popen([str(PROXY_BIN), "--config", str(config), "--shards", "2"],
                            stdout=subprocess.PIPE, stderr=log, preexec_fn=die_with_parent)
    found: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            line = raw.decode(errors="replace").strip()
            if line.startswith(READY) and not found:
                found.append(line[len(READY):])
                done.set()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    done.wait(30)
    if not found:
        proc.kill()
        raise SystemExit(f"mcp-proxy did not start; log in {workdir / 'proxy.log'}")
    return proc, found[0]


def mcpctl_call(mcp_url: str, tool: str, args: dict) -> str:
    done = subprocess.run([str(MCPCTL_BIN), "call", tool, "--args", json.dumps(args), "--mcp-url", mcp_url,
                           "--json", "--timeout", "20"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"mcpctl call {tool} failed ({done.returncode}): {done.stderr}")
    return "".join(c.get("text", "") for c in json.loads(done.stdout).get("content", []))


async def sdk_tools(mcp_url: str) -> list[str]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(mcp_url) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return [t.name for t in (await session.list_tools()).tools]


async def sdk_elicitation_defaults(mcp_url: str) -> str:
    from mcp import ClientSession, types
    from mcp.client.streamable_http import streamable_http_client

    async def accept_defaults(context, params):
        schema = getattr(params, "requestedSchema", None) or getattr(params, "requested_schema", {})
        content = {k: p["default"] for k, p in schema.get("properties", {}).items() if "default" in p}
        return types.ElicitResult(action="accept", content=content)

    async with streamable_http_client(mcp_url) as (read, write):
        async with ClientSession(read, write, elicitation_callback=accept_defaults) as session:
            await session.initialize()
            result = await session.call_tool("test_client_elicitation_defaults", {})
            return "".join(getattr(c, "text", "") for c in result.content)


def drive(scenario: str, mcp_url: str) -> None:
    import anyio

    if scenario == "initialize":
        tools = anyio.run(sdk_tools, mcp_url)
        print(f"tools through the proxy: {tools}")
    elif scenario == "tools_call":
        text = mcpctl_call(mcp_url, "add_numbers", {"a": 2, "b": 3})
        print(text)
        if "5" not in text:
            raise SystemExit(f"add_numbers answered {text!r}")
    elif scenario == "sse-retry":
        text = mcpctl_call(mcp_url, "test_reconnection", {})
        print(text)
        if "completed successfully" not in text:
            raise SystemExit(f"test_reconnection answered {text!r}")
    elif scenario == "elicitation-sep1034-client-defaults":
        text = anyio.run(sdk_elicitation_defaults, mcp_url)
        print(text)
        if "Elicitation completed" not in text:
            raise SystemExit(f"the elicitation did not complete: {text!r}")
    else:
        raise SystemExit(f"scenario {scenario!r} is not driven by this wrapper")


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: client-via-proxy.py SERVER_URL (run by `conformance client`)")
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    # The suite ends a client that overstays with SIGTERM: leave through `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="conformance-client-") as d:
        proxy, mcp_url = start_proxy(sys.argv[-1], Path(d))
        try:
            drive(scenario, mcp_url)
        finally:
            proxy.kill()
            proxy.wait()
            log = (Path(d) / "proxy.log").read_text(errors="replace")
            sys.stderr.write(log[-4000:])


if __name__ == "__main__":
    main()
