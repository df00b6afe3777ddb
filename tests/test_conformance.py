"""The official MCP conformance suite, run against the project's fixture server directly and through
the proxy: a client must not be able to tell the proxy from the server behind it.

Topology: tests/conformance/fixture-server.mjs (tools, prompts and resources every server scenario of
`@modelcontextprotocol/conformance` calls for) on a free port; the proxy in front of it with
`prefix = ""`, so the fixture's tool/prompt names and resource URIs reach the client unchanged. The
fixture runs twice: speaking both eras, as the suite's own reference server does
(fixture-stateless.mjs says where they differ), and speaking only the stateful one.

Two releases of the suite are pinned (tests/package.json): the stable one (`stable`, 2025-era
scenarios) and the newest prerelease (`next`, an npm alias, adding the 2026-07-28 scenarios:
server-stateless, caching, header validation, input_required rounds...). Against the dual-era
fixture both run; against the stateful-only one the stable suite does.

Every server scenario (`conformance list --server`, `--suite all`: pending and extension ones too)
runs against both URLs. The test fails when a scenario that passes directly does not pass through the
proxy, and when a check that succeeds directly is FAILURE or WARNING through the proxy (WARNING is the
suite's verdict that something the spec recommends is missing, e.g. the SEP-1699 priming event).
Against the dual-era fixture this shows that a stateful client keeps what such a server offers only
in a stateful session (server-to-client sampling and elicitation, resources/subscribe): the proxy
chooses the upstream era per client session. The one exception is FIRST_TOOL_CHECKS (below).
Checks that succeed directly and are INFO / absent through the proxy (the suite found them not
applicable, e.g. a JSON answer where the fixture streamed) and scenarios that fail even directly are
printed, not held against the proxy.

The suite cannot see one thing a client would: server-sse-polling treats any JSON answer to its
`test_reconnection` call as "SSE not applicable", even a JSON-RPC error. The second test checks that
case itself: the fixture closes the POST stream before answering (after a priming event with a
5 s retry hint), and a client must still get the tool's result. As the suite's reference server
does, the fixture keeps that result only for a client that is back with GET + Last-Event-ID before
the result is ready (100 ms): a proxy that waits out the hint itself before resuming loses it, so
the proxy has to pass the early end on and resume the upstream stream when its client does.

(conformance 0.1.x sends its raw server-sse-polling call with MCP-Protocol-Version 2025-03-26, a suite
bug fixed upstream; the fixture reads it as the negotiated 2025-11-25, see fixture-server.mjs, so that
SEP-1699 is exercised at all.)

Client scenarios (`conformance client`) check a client: the proxy's upstream side is one.
tests/conformance/client-via-proxy.py is the "client command": it starts mcp-proxy with the
scenario's test server as its only upstream (`prefix = ""`) and drives the proxy through `mcpctl
call` or the Python SDK, so every request the test server judges comes from the proxy's upstream
client (initialize handshake, tools/call, SSE resumption with Last-Event-ID after the retry delay,
elicitation relayed to the downstream client and its answer relayed back). The scenarios that fit:
initialize, tools_call, sse-retry, elicitation-sep1034-client-defaults. The auth/* scenarios do
not fit: they check a client's OAuth flow (metadata discovery, dynamic or pre-registration, token
endpoint authentication, scopes), and mcp-proxy has no OAuth client for its upstreams (static
`headers` only), so each would fail at the first 401; they are listed and left out by name, and a
new client scenario that is neither fitting nor auth/* fails the test until it is classified.
sse-retry's timing check (reconnect within 450-700 ms of the stream's close) may be a WARNING on
a loaded machine; only that check may warn, every check must be free of FAILURE.

Results (checks.json per scenario, and the CLI's log) stay under the pytest tmp dir:
conformance*/direct/server-<scenario>-<time>/ and conformance*/proxy/...
Run alone: tests/.venv/bin/python -m pytest tests/test_conformance.py -s -p no:cacheprovider
"""

from __future__ import annotations

import sys

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


# Checks that call whichever tool is listed first, with no arguments: through the proxy that is the
# proxy's own proxy__search_tools, which rightly refuses a call without its `query`.
FIRST_TOOL_CHECKS = {"ServerAcceptsWhitespaceHeaderValue"}


def only_first_tool_checks(result: suite.ScenarioResult) -> bool:
    return result.problem is None and bool(result.failures) and \
        all(c.get("name") in FIRST_TOOL_CHECKS for c in result.failures)


class Served:
    """A fixture and the proxy in front of it."""

    def __init__(self, eras: str) -> None:
        self.eras = eras
        self.fixture = suite.start_fixture(eras=eras)
        try:
            self.proxy = harness.start_proxy(PROXY_CONFIG.format(url=self.fixture.url), shards=2)
        except BaseException:
            self.fixture.kill()
            raise

    @property
    def url(self) -> str:
        return self.fixture.url

    def kill(self) -> None:
        self.proxy.kill()
        self.fixture.kill()


@pytest.fixture(scope="module")
def both_eras():
    served = Served("both")
    try:
        yield served
    finally:
        served.kill()


@pytest.fixture(scope="module")
def stateful_only():
    served = Served("stateful")
    try:
        yield served
    finally:
        served.kill()


# The SEP-1699 test below calls the fixture the stateful way; either fixture serves it.
@pytest.fixture(scope="module")
def fixture_server(both_eras):
    return both_eras.fixture


@pytest.fixture(scope="module")
def proxy_to_fixture(both_eras):
    return both_eras.proxy


@pytest.mark.timeout(900)
@pytest.mark.parametrize("eras,release", [("both", "stable"), ("both", "next"), ("stateful", "stable")])
def test_server_scenarios_pass_through_the_proxy_as_directly(eras, release, request, tmp_path_factory):
    served = request.getfixturevalue("both_eras" if eras == "both" else "stateful_only")
    out = tmp_path_factory.mktemp(f"conformance-{eras}-{release}")
    scenarios = suite.list_server_scenarios(release)
    direct = suite.run_server_suite(served.url, out / "direct", scenarios, suite=release)
    proxied = suite.run_server_suite(served.proxy.url, out / "proxy", scenarios, suite=release)
    comparison = suite.Comparison(direct, proxied)
    report = comparison.report()
    print(f"\nconformance {suite.suite_version(release)} against the {eras}-era fixture, results under {out}\n"
          f"passed: direct {sum(r.passed for r in direct.values())}/{len(direct)}, "
          f"through the proxy {sum(r.passed for r in proxied.values())}/{len(proxied)}\n{report}")

    # The fixture has to be worth comparing against.
    assert sum(r.passed for r in direct.values()) > len(direct) // 2, f"most scenarios fail even directly:\n{report}"
    assert served.proxy.proc.poll() is None, f"the proxy died during the suite:\n{served.proxy.stderr_tail()}"
    regressions = [s for s in comparison.regressions if not only_first_tool_checks(comparison.proxied[s])]
    assert not regressions and not comparison.check_regressions, (
        "scenarios that pass directly against the fixture do not pass through the proxy:\n" + report)


@pytest.mark.timeout(120)
def test_tool_result_survives_a_stream_the_server_closes_mid_call(fixture_server, proxy_to_fixture):
    """SEP-1699 (2025-11-25): `test_reconnection` makes the fixture close the POST's SSE stream after
    its priming event and send the result afterwards, for a client that reconnected at once to
    fetch with GET + Last-Event-ID. Directly that works (checked first, so the fixture is known
    good); through the proxy the client, reconnecting at once too, must receive the same result.
    The proxy's metrics count the stream it ended early as `polling`, not as a completed answer."""
    from test_relay import metrics_when, stream_metrics

    polled_before = stream_metrics(proxy_to_fixture.admin_url)[0].get("polling", 0)
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
    metrics_when(proxy_to_fixture.admin_url, lambda ended, _: ended.get("polling", 0) > polled_before,
                 "the stream ended for SSE polling counted as `polling`")


CLIENT_SCENARIOS = ["initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults"]
# Checks measured with a clock: a loaded machine may make them late (a WARNING, never a FAILURE).
TIMING_CHECKS = {"client-sse-retry-timing"}


@pytest.mark.timeout(600)
def test_client_scenarios_pass_against_the_proxys_upstream_side(tmp_path_factory):
    listed = suite.list_client_scenarios()
    unclassified = [s for s in listed if s not in CLIENT_SCENARIOS and not s.startswith("auth/")]
    assert not unclassified, f"new client scenarios to classify (fit or explain): {unclassified}"
    missing = [s for s in CLIENT_SCENARIOS if s not in listed]
    assert not missing, f"the suite no longer lists {missing}"
    if not harness.PROXY_BIN.with_name("mcpctl").exists():
        pytest.skip("mcpctl missing: cargo build --release -p mcpctl")

    out = tmp_path_factory.mktemp("conformance-client")
    lines, problems = [], []
    for scenario in CLIENT_SCENARIOS:
        result, status = suite.run_client_scenario(scenario, out, sys.executable)
        warned = [c for c in result.checks if c.get("status") == "WARNING"]
        lines.append(f"{scenario:40} {result.summary()} (exit {status})")
        if not result.passed or result.count("SUCCESS") == 0:
            problems.append(f"{scenario}: {result.summary()}\n{result.failure_text()}\n{result.log}")
        elif any(c.get("id") not in TIMING_CHECKS for c in warned):
            problems.append(f"{scenario}: warnings {[c.get('errorMessage') for c in warned]}\n{result.log}")
        elif status != 0 and not warned:
            problems.append(f"{scenario}: the CLI exited {status}\n{result.log}")
    print(f"\nclient conformance results under {out}\n" + "\n".join(lines))
    assert not problems, "\n\n".join(problems)
