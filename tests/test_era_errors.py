"""Errors on the wire, as each era's spec words them, through the proxy.

Topology (module fixture `modern`): one replica of the Python SDK's MCPServer answering
2026-07-28 statelessly (tests/fixtures/stateless_server.py; its `sample_word` needs the client's
sampling capability, and the SDK refuses a call from a client without it with HTTP 400 and
-32021 MissingRequiredClientCapability), behind a proxy with two shards.

2026-07-28 (basic/index.mdx, basic/transports/streamable-http.mdx):
- a request whose `_meta` lacks `protocolVersion` or `clientCapabilities` is malformed: -32602,
  HTTP 400;
- a method the server does not implement: -32601, HTTP 404;
- an unsupported `MCP-Protocol-Version`: -32022 with HTTP 400, naming the request's id;
- an upstream's JSON-RPC error reaches the client with its code and data, under the client's id
  (never the upstream's), with the status the era gives that code (-32021: 400).
2025-11-25: the same upstream refusal is the answer to the client's request (HTTP 200 or on its
stream), with the code and data intact.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import harness
from harness import ACCEPT_BOTH, raw_request

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stateless_server.py"
MODERN = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPS = "io.modelcontextprotocol/clientCapabilities"
META_INFO = "io.modelcontextprotocol/clientInfo"


@pytest.fixture(scope="module")
def modern():
    port = harness.free_port()
    child = harness.spawn("modern", [sys.executable, str(FIXTURE), str(port), "modern"])
    proxy = None
    try:
        harness.wait_for_port(port, child)
        proxy = harness.start_proxy(
            f'[[servers]]\nname = "modern"\nurl = "http://127.0.0.1:{port}/mcp"\ntimeout = "30s"\n', shards=2)
        yield proxy
    finally:
        if proxy is not None:
            proxy.kill()
        child.kill()


def headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    h = {"Accept": ACCEPT_BOTH, "Content-Type": "application/json", "MCP-Protocol-Version": version,
         "Mcp-Method": method}
    if name is not None:
        h["Mcp-Name"] = name
    return h


def body(method: str, params: dict | None = None, request_id=1, meta: dict | None = None) -> dict:
    p = dict(params or {})
    p["_meta"] = meta if meta is not None else {META_VERSION: MODERN, META_CAPS: {},
                                                 META_INFO: {"name": "raw", "version": "1"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": p}


@pytest.mark.parametrize("meta", [None, {META_CAPS: {}}, {META_VERSION: MODERN}, {META_VERSION: MODERN, META_CAPS: "x"}],
                         ids=["no-meta", "no-version", "no-capabilities", "capabilities-not-object"])
def test_request_without_required_meta_is_invalid_params_400(modern, meta):
    msg = body("tools/list", request_id=101)
    if meta is None:
        del msg["params"]["_meta"]
    else:
        msg["params"]["_meta"] = meta
    r = raw_request(modern.url, body=msg, headers=headers("tools/list"))
    assert r.status == 400, r.body
    (answer,) = r.messages
    assert answer["id"] == 101
    assert answer["error"]["code"] == -32602
    assert "_meta" in answer["error"]["message"]


def test_meta_without_client_info_is_served(modern):
    r = raw_request(modern.url, body=body("tools/list", meta={META_VERSION: MODERN, META_CAPS: {}}),
                    headers=headers("tools/list"))
    assert r.status == 200, r.body
    assert "modern__shout" in {t["name"] for t in r.messages[0]["result"]["tools"]}


@pytest.mark.parametrize("method", ["no/such-method", "tasks/get"])
def test_unknown_method_is_404_method_not_found(modern, method):
    r = raw_request(modern.url, body=body(method, request_id="m-7"), headers=headers(method))
    assert r.status == 404, r.body
    (answer,) = r.messages
    assert answer["id"] == "m-7"
    assert answer["error"]["code"] == -32601


def test_unsupported_version_error_names_the_request_id(modern):
    msg = body("server/discover", request_id=301)
    msg["params"]["_meta"][META_VERSION] = "v999.0.0"
    r = raw_request(modern.url, body=msg, headers=headers("server/discover", version="v999.0.0"))
    assert r.status == 400, r.body
    (answer,) = r.messages
    assert answer["id"] == 301
    assert answer["error"]["code"] == -32022
    assert answer["error"]["data"]["requested"] == "v999.0.0"
    assert MODERN in answer["error"]["data"]["supported"]


def test_unsupported_version_of_an_unreadable_body_has_a_null_id(modern):
    r = raw_request(modern.url, body=b"{not json", headers=headers("server/discover", version="v999.0.0"))
    assert r.status == 400
    assert r.messages[0]["id"] is None and r.messages[0]["error"]["code"] == -32022


def test_upstream_refusal_reaches_a_modern_client_with_its_code_and_status(modern):
    call = body("tools/call", {"name": "modern__sample_word", "arguments": {"prompt": "hi"}}, request_id=401)
    r = raw_request(modern.url, body=call, headers=headers("tools/call", "modern__sample_word"))
    assert r.status == 400, r.body
    (answer,) = r.messages
    assert answer["id"] == 401, "the client's id, not the one the proxy gave the upstream"
    error = answer["error"]
    assert error["code"] == -32021, error
    assert error["data"]["requiredCapabilities"] == {"sampling": {}}
    assert "HTTP 400" not in error["message"], "the upstream's error is passed on, not rewrapped"


def test_upstream_refusal_reaches_a_stateful_client_with_its_code(modern):
    session = harness.raw_initialize(modern.url)
    call = harness.rpc("tools/call", {"name": "modern__sample_word", "arguments": {"prompt": "hi"}}, request_id=77)
    r = raw_request(modern.url, body=call, session=session)
    assert r.status == 200, r.body
    (answer,) = [m for m in r.messages if m.get("id") == 77]
    assert answer["error"]["code"] == -32021, answer
    assert answer["error"]["data"]["requiredCapabilities"] == {"sampling": {}}
