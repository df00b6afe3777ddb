"""Every resource URI the proxy hands a client reads back through the proxy.

Topology: server-everything over Streamable HTTP (prefix `everything`) behind a proxy with two
shards. The TypeScript SDK's client (tests/clients/read_back_resources.mjs) calls
`get-resource-links` (resource_link blocks), `get-resource-reference` (embedded resources, text and
blob) and gets the `resource-prompt` prompt (an embedded resource in a prompt message), then reads
each URI it was given with resources/read and checks that the contents name that same URI.

Directly, server-everything's own URIs (`demo://...`) read back; through the proxy, the URIs come
prefixed (`everything+demo://...`) and read back too. What a client sends inside tool arguments is
not rewritten (docs/architecture.md, "Names").
"""

from __future__ import annotations

import json
import subprocess

import pytest

import harness

SCRIPT = harness.TESTS_DIR / "clients" / "read_back_resources.mjs"


def read_back(url: str, prefix: str) -> dict:
    done = subprocess.run(["node", str(SCRIPT), url, prefix], cwd=harness.TESTS_DIR, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def everything_behind_proxy():
    upstream = harness.start_everything_http()
    proxy = None
    try:
        proxy = harness.start_proxy({"everything": upstream.url}, shards=2)
        yield upstream, proxy
    finally:
        if proxy is not None:
            proxy.kill()
        upstream.kill()


@pytest.mark.timeout(180)
def test_every_resource_uri_a_tool_or_prompt_returns_reads_back(everything_behind_proxy):
    upstream, proxy = everything_behind_proxy
    direct = read_back(upstream.url, "")
    assert len(direct["uris"]) == 7 and set(direct["reads"].values()) == {"ok"}, direct

    through = read_back(proxy.url, "everything")
    assert len(through["uris"]) == len(direct["uris"]), through
    assert all(u.startswith("everything+") for u in through["uris"]), through["uris"]
    assert [u.removeprefix("everything+") for u in through["uris"]] == direct["uris"]
    bad = {u: r for u, r in through["reads"].items() if r != "ok"}
    assert not bad, f"URIs handed out by the proxy that do not read back through it: {bad}"
