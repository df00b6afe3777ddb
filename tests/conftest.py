"""pytest fixtures for the mcp-proxy integration tests.

The shared topology (`proxy_ab`): two real server-everything instances over Streamable HTTP,
named `alpha` and `beta`, behind one proxy with two shards. Tests that need their own topology
(a down upstream, an upstream restart) start it through `spawner`, which kills what it started
at teardown whatever the outcome. `harness.kill_all` is also registered with atexit.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


@dataclass
class Topology:
    """A proxy and the upstreams behind it, by configured name."""

    proxy: harness.Proxy
    upstreams: dict[str, harness.Upstream]

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def proxy_ab():
    """alpha and beta (server-everything) behind a proxy with --shards 2."""
    started: list = []
    try:
        alpha = harness.start_everything_http()
        started.append(alpha)
        beta = harness.start_everything_http()
        started.append(beta)
        proxy = harness.start_proxy([("alpha", alpha.url), ("beta", beta.url)], shards=2)
        started.append(proxy)
        yield Topology(proxy, {"alpha": alpha, "beta": beta})
    finally:
        for p in reversed(started):
            p.kill()


class Spawner:
    """Starts upstreams and proxies for one test and kills every one of them afterwards."""

    def __init__(self) -> None:
        self.started: list = []

    def everything(self, port: int | None = None) -> harness.Upstream:
        u = harness.start_everything_http(port)
        self.started.append(u)
        return u

    def proxy(self, config, shards: int = 2) -> harness.Proxy:
        p = harness.start_proxy(config, shards=shards)
        self.started.append(p)
        return p

    def close(self) -> None:
        for p in reversed(self.started):
            p.kill()
        self.started.clear()


@pytest.fixture
def spawner():
    s = Spawner()
    try:
        yield s
    finally:
        s.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the stderr tail of every proxy (and upstream) still running."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        for child in harness.live_children():
            tail = child.stderr_tail(60)
            if tail:
                report.sections.append((f"stderr of {child.name} (pid {child.proc.pid})", tail))
    return report


def pytest_configure(config):
    # atexit does not run when the runner is terminated by a signal (a CI timeout sends SIGTERM):
    # kill the children first, then stop the run the way Ctrl-C does.
    def on_term(signum, frame):
        harness.kill_all()
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)


def pytest_sessionfinish(session, exitstatus):
    harness.kill_all()
