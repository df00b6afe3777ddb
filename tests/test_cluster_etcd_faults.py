"""A fleet member whose connections to etcd go silent (a real etcd behind a TCP relay the test
controls; two other members reach etcd directly).

- The relay blackholes every connection it holds (no byte forwarded either way, no FIN, no
  RST: a partition, a powered-off host, a NAT dropping the flow) while new connections still
  reach etcd. A server then added through another member is listed by the member behind the
  relay within 10 s (docs/architecture.md, "etcd down": the watch lives 5 s, then the registry
  is reread on a fresh connection, which may first have to time out on a dead pooled one).
- The registry key holds something that is not a registry document (written there by hand),
  at start and later in place of a good one, an empty value included. Each member logs the key,
  says it is not a registry document (not that etcd is unreachable) and how to look at and
  replace it with `etcdctl` commands that name this etcd, and keeps serving
  what it ran (its file's servers, then the last good registry), and says so in
  `/api/v1/cluster`'s `registry_error` until a valid value replaces it. An admin change is refused
  with a 500 naming the key and leaves the value alone; once the key is deleted, a change made
  on another member is listed without a restart (docs/architecture.md, "A fleet on etcd").
"""

from __future__ import annotations

import base64
import json
import select
import socket
import subprocess
import threading
import time
import urllib.request
import uuid

import harness
from cluster_fixtures import (ETCD_MISSING, admin, cluster, etcd,  # noqa: F401
                              member_config, server_names)
from test_admin import MCPCTL, TOKEN, wait_until

pytestmark = ETCD_MISSING


class Relay:
    """Forwards TCP connections from a free local port to `target`; `blackhole()` stops every
    connection open at that moment (sockets kept open, nothing forwarded, nothing closed),
    while connections made afterwards are forwarded as usual."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[dict] = []
        self.closed = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            conn = {"sockets": (client, upstream), "held": False}
            with self.lock:
                self.open.append(conn)
            t = threading.Thread(target=self._pump, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, conn: dict) -> None:
        client, upstream = conn["sockets"]
        other = {client: upstream, upstream: client}
        while not self.closed.is_set():
            if conn["held"]:
                # Blackholed: read nothing, send nothing, close nothing.
                time.sleep(0.1)
                continue
            ready, _, _ = select.select([client, upstream], [], [], 0.1)
            # Under the lock, so nothing is forwarded once blackhole() has returned.
            with self.lock:
                if conn["held"]:
                    continue
                for s in ready:
                    try:
                        data = s.recv(65536)
                        if not data:
                            raise OSError("closed")
                        other[s].sendall(data)
                    except OSError:
                        client.close()
                        upstream.close()
                        return

    def blackhole(self) -> int:
        """Holds every connection open now; how many."""
        with self.lock:
            for conn in self.open:
                conn["held"] = True
            return len(self.open)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=5)
        with self.lock:
            for conn in self.open:
                for s in conn["sockets"]:
                    s.close()


def test_a_member_whose_etcd_connections_go_silent_still_follows_the_registry(spawner, etcd):
    relay = Relay(etcd.client_port)
    try:
        prefix = f"/t-{uuid.uuid4().hex[:8]}/"
        m1, m2 = (spawner.proxy(member_config(etcd, prefix, f"m{i}"), shards=1) for i in (1, 2))
        behind = spawner.proxy(member_config(relay, prefix, "m3"), shards=1)
        ev = spawner.everything()
        # A change through the relay first: the member behind it is watching on a live stream.
        assert admin(m1, "POST", "servers", {"name": "before", "url": ev.url})[0] == 201
        wait_until(lambda: "before" in server_names(behind), timeout=10, what="before on m3")

        held = relay.blackhole()
        assert held >= 1, held
        status, v = admin(m2, "POST", "servers", {"name": "after", "url": ev.url})
        assert status == 201, v
        added = time.monotonic()
        wait_until(lambda: "after" in server_names(behind), timeout=10,
                   what="a server added on m2 listed by m3 whose etcd connections went silent")
        print(f"{held} connections blackholed; m3 listed the new server "
              f"{time.monotonic() - added:.1f}s after it was added")
        assert "after" in server_names(m1)
    finally:
        relay.close()


def etcd_call(etcd, op: str, body: dict) -> dict:
    """One call of etcd's JSON gateway (`/v3/kv/<op>`), keys and values base64 as it wants."""
    req = urllib.request.Request(f"{etcd.url}/v3/kv/{op}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def mcpctl(member: harness.Proxy, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MCPCTL), *args], capture_output=True, text=True, timeout=60,
                          env={"MCPCTL_URL": member.admin_url, "MCPCTL_TOKEN": TOKEN,
                               "PATH": "/usr/bin:/bin"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def etcd_put(etcd, key: str, value: bytes) -> int:
    """Writes `value` at `key`; the revision it made."""
    return int(etcd_call(etcd, "put", {"key": b64(key.encode()), "value": b64(value)})
               ["header"]["revision"])


def etcd_value(etcd, key: str) -> bytes | None:
    kvs = etcd_call(etcd, "range", {"key": b64(key.encode())}).get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None


def test_a_registry_key_holding_no_registry_document_is_named_kept_and_replaced_by_a_valid_write(
        spawner, etcd):
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    key = f"{prefix}registry"
    truncated = b'{"format":1,"version":4,"servers":[{"name":"gone","spec":{"url":"http://'
    etcd_put(etcd, key, truncated)
    ev = spawner.everything()
    servers = harness.servers_toml({"filed": ev.url})
    m1, m2 = (spawner.proxy(member_config(etcd, prefix, f"m{i}", servers), shards=1)
              for i in (1, 2))

    def log(member) -> str:
        return member.child.stderr_path.read_text(errors="replace")

    # At start: each member names the key and the way out, and serves its file's servers.
    for m in (m1, m2):
        wait_until(lambda: f"the etcd key {key} (revision" in log(m), timeout=10,
                   what="the member's log naming the registry key")
        text = log(m)
        assert "is not a registry document" in text, text
        # The commands work as printed: they name this fleet's etcd.
        etcdctl = f"etcdctl --endpoints={etcd.url}"
        assert f"`{etcdctl} get {key}`" in text and f"`{etcdctl} del {key}`" in text, text
        assert "unreachable" not in text and "until etcd answers" not in text, text
        assert server_names(m) == {"filed"}
        assert key in (cluster(m)["registry_error"] or ""), cluster(m)
        with urllib.request.urlopen(f"{m.admin_url}/readyz", timeout=5) as r:
            assert r.status == 200

    # An admin change does not write over the value: refused, naming the key; value intact.
    status, v = admin(m1, "POST", "servers", {"name": "added", "url": ev.url})
    assert status == 500, v
    assert v["kind"] == "shared_registry_unreadable", v
    assert key in v["error"] and "not a registry document" in v["error"], v
    r = mcpctl(m1, "servers", "add", "added", "--url", ev.url)
    assert r.returncode != 0 and f"del {key}" in r.stderr, (r.returncode, r.stderr)
    r = mcpctl(m1, "cluster", "ls")
    assert r.returncode == 0 and f"registry: the etcd key {key}" in r.stdout, r.stdout
    assert etcd_value(etcd, key) == truncated
    assert server_names(m1) == {"filed"}

    # The way out: delete the key; a change on one member is then listed on the other.
    etcd_call(etcd, "deleterange", {"key": b64(key.encode())})
    status, v = admin(m2, "POST", "servers", {"name": "added", "url": ev.url})
    assert status == 201, v
    wait_until(lambda: "added" in server_names(m1), timeout=10,
               what="a server added on m2 listed by m1 once the key was deleted")
    assert cluster(m1)["registry_error"] is None

    # Later, the key is overwritten with a value that is no document: the watch names it, both
    # members keep the last good registry, and a change is refused again.
    revision = etcd_put(etcd, key, b"servers = []\n")
    for m in (m1, m2):
        wait_until(lambda: f"the etcd key {key} (revision {revision})" in log(m), timeout=10,
                   what="the watch naming the registry key overwritten")
        assert server_names(m) == {"filed", "added"}
        assert f"revision {revision}" in (cluster(m)["registry_error"] or ""), cluster(m)
    status, v = admin(m2, "POST", "servers", {"name": "later", "url": ev.url})
    assert status == 500 and key in v["error"], v
    assert etcd_value(etcd, key) == b"servers = []\n"

    # An empty value is no document either (no member writes one): it does not take the
    # servers added through the admin API off the fleet.
    revision = etcd_put(etcd, key, b"")
    for m in (m1, m2):
        wait_until(lambda: f"the etcd key {key} (revision {revision}) is not a registry document: "
                   "the value is empty" in log(m), timeout=10, what="the watch naming the empty value")
        assert server_names(m) == {"filed", "added"}

    # A valid document written in its place (one that adds nothing to the file) is followed
    # without a restart.
    etcd_put(etcd, key, json.dumps({"format": 1, "version": 9, "servers": []}).encode())
    for m in (m1, m2):
        wait_until(lambda: server_names(m) == {"filed"}, timeout=10,
                   what="a valid document written over the bad one followed")
        assert cluster(m)["registry_error"] is None
