"""The official MCP conformance suite, run against the project's fixture server directly and through
the proxy: a client must not be able to tell the proxy from the server behind it.

Topology: tests/conformance/fixture-server.mjs (tools, prompts and resources every server scenario of
`@modelcontextprotocol/conformance` calls for) on a free port; the proxy in front of it with
`prefix = ""`, so the fixture's tool/prompt names and resource URIs reach the client unchanged.

Every server scenario (`conformance list --server`, including the two the suite keeps "pending") runs
against both URLs. The test fails when a scenario that passes directly does not pass through the
proxy, and when a check that succeeds directly is FAILURE or WARNING through the proxy (WARNING is the
suite's verdict that something the spec recommends is missing, e.g. the SEP-1699 priming event).
Checks that succeed directly and are INFO / absent through the proxy (the suite found them not
applicable, e.g. a JSON answer where the fixture streamed) and scenarios that fail even directly are
printed, not held against the proxy.

The suite cannot see one thing a client would: server-sse-polling treats any JSON answer to its
`test_reconnection` call as "SSE not applicable", even a JSON-RPC error. The second test checks that
case itself: the fixture closes the POST stream before answering (after a priming event with a
retry hint), and a client must still get the tool's result, whether the proxy resumes the upstream
stream itself or lets the client resume with GET + Last-Event-ID.

(conformance 0.1.x sends its raw server-sse-polling call with MCP-Protocol-Version 2025-03-26, a suite
bug fixed upstream; the fixture reads it as the negotiated 2025-11-25, see fixture-server.mjs, so that
SEP-1699 is exercised at all.)

Results (checks.json per scenario, and the CLI's log) stay under the pytest tmp dir:
conformance*/direct/server-<scenario>-<time>/ and conformance*/proxy/...
Run alone: tests/.venv/bin/python -m pytest tests/test_conformance.py -s -p no:cacheprovider
"""

from __future__ import annotations

import pytest

import harness
from conformance import suite

PROXY_CONFIG = """\
[proxy]
listen = "127.0.0.1:0"
shards = 2

[[servers]]
name = "fixture"
url = "{url}"
prefix = ""
"""


@pytest.fixture(scope="module")
def fixture_server():
    upstream = suite.start_fixture()
    try:
        yield upstream
    finally:
        upstream.kill()


@pytest.fixture(scope="module")
def proxy_to_fixture(fixture_server):
    proxy = harness.start_proxy(PROXY_CONFIG.format(url=fixture_server.url), shards=2)
    try:
        yield proxy
    finally:
        proxy.kill()


@pytest.mark.timeout(900)
def test_server_scenarios_pass_through_the_proxy_as_directly(fixture_server, proxy_to_fixture, tmp_path_factory):
    out = tmp_path_factory.mktemp("conformance")
    scenarios = suite.list_server_scenarios()
    direct = suite.run_server_suite(fixture_server.url, out / "direct", scenarios)
    proxied = suite.run_server_suite(proxy_to_fixture.url, out / "proxy", scenarios)
    comparison = suite.Comparison(direct, proxied)
    report = comparison.report()
    print(f"\nconformance results under {out}\n{report}")

    # The fixture has to be worth comparing against (today it passes all 32 scenarios directly).
    assert sum(r.passed for r in direct.values()) > 0, f"nothing passes even directly:\n{report}"
    assert proxy_to_fixture.proc.poll() is None, f"the proxy died during the suite:\n{proxy_to_fixture.stderr_tail()}"
    assert not comparison.regressions and not comparison.check_regressions, (
        "scenarios that pass directly against the fixture do not pass through the proxy:\n" + report)


@pytest.mark.timeout(120)
def test_tool_result_survives_a_stream_the_server_closes_mid_call(fixture_server, proxy_to_fixture):
    """SEP-1699 (2025-11-25): `test_reconnection` makes the fixture close the POST's SSE stream after
    its priming event and send the result afterwards, for the client to fetch with GET +
    Last-Event-ID. Directly that works (checked first, so the fixture is known good); through the
    proxy the client must receive the same successful result."""
    outcomes = {}
    for label, url in (("direct", fixture_server.url), ("proxy", proxy_to_fixture.url)):
        sid = harness.raw_initialize(url)
        answer, transcript = suite.call_tool_resuming(url, sid, "test_reconnection", f"sep1699-{label}")
        outcomes[label] = (answer, transcript)
    report = "\n".join(f"{label}:\n  " + "\n  ".join(t) for label, (_, t) in outcomes.items())
    print(report)

    direct, _ = outcomes["direct"]
    assert direct is not None and "result" in direct, f"the fixture itself did not deliver the result:\n{report}"
    proxied, _ = outcomes["proxy"]
    assert proxied is not None, f"no answer through the proxy:\n{report}"
    assert "result" in proxied and not proxied["result"].get("isError"), (
        f"through the proxy the tool call failed where the server answered it:\n{report}")
    assert harness.tool_text(proxied["result"]) == harness.tool_text(direct["result"]), report
