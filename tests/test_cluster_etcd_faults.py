"""A fleet member whose connections to etcd go silent (a real etcd behind a TCP relay the test
controls; two other members reach etcd directly).

- The relay blackholes every connection it holds (no byte forwarded either way, no FIN, no
  RST: a partition, a powered-off host, a NAT dropping the flow) while new connections still
  reach etcd. A server then added through another member is listed by the member behind the
  relay within 10 s (docs/architecture.md, "etcd down": the watch lives 5 s, then the registry
  is reread on a fresh connection, which may first have to time out on a dead pooled one).
"""

from __future__ import annotations

import select
import socket
import threading
import time
import uuid

import harness
from cluster_fixtures import (ETCD_MISSING, admin, etcd,  # noqa: F401
                              member_config, server_names)
from test_admin import wait_until

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
