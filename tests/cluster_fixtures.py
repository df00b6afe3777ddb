"""Fixtures and helpers shared by the fleet tests (test_cluster*.py): a real etcd (Debian's
`etcd-server`) on free ports with a temporary data directory, killed at the end whatever the
outcome; three members on it under a fresh prefix; the admin API as JSON.

A test module imports the fixtures it uses by name (`from cluster_fixtures import etcd,
members`) so pytest finds them there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import harness
from test_admin import TOKEN, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
SESSION_KEY = "5e" * 32
ETCD_MISSING = pytest.mark.skipif(not Path(ETCD).exists(),
                                  reason="etcd-server is not installed (tests/run.sh installs it)")


class Etcd:
    """One etcd member on free ports; stop() and start() keep its data directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcp-proxy-etcd-"))
        self.client_port = harness.free_port()
        self.peer_port = harness.free_port()
        self.child: harness.Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.child = harness.spawn("etcd", [
            ETCD, "--name", "t", "--data-dir", self.dir / "data",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"t={peer}",
        ])
        harness.wait_for_port(self.client_port, self.child)
        wait_until(lambda: _get(self.url + "/health")[0] == 200, what="etcd healthy")

    def stop(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def etcd():
    e = Etcd()
    try:
        e.start()
        yield e
    finally:
        e.close()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except OSError:
        return 0, {}


def admin(proxy: harness.Proxy, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{proxy.admin_url}/api/v1/{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def member_config(etcd: Etcd, prefix: str, name: str, servers: str = "", cluster: str = "") -> str:
    """A member's configuration; `cluster` adds lines to its `[cluster]` table."""
    return (f'[proxy]\nadmin_token = "{TOKEN}"\nsession_key = "{SESSION_KEY}"\n\n'
            f'[cluster]\netcd = ["{etcd.url}"]\nprefix = "{prefix}"\nname = "{name}"\n'
            f'lease_ttl = "3s"\n{cluster}\n{servers}')


@pytest.fixture
def members(spawner, etcd):
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    return [spawner.proxy(member_config(etcd, prefix, f"m{i}"), shards=1) for i in (1, 2, 3)]


def server_names(proxy: harness.Proxy) -> set[str]:
    status, v = admin(proxy, "GET", "servers")
    assert status == 200, v
    return {s["name"] for s in v["servers"]}


def cluster(proxy: harness.Proxy) -> dict:
    status, v = admin(proxy, "GET", "cluster")
    assert status == 200, v
    return v
