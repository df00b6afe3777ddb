"""The admin listener answers only requests that name it by localhost, an IP address or a host
listed in `[proxy] admin_allowed_hosts`, so a web page cannot read it by DNS rebinding.

- raw HTTP with `Host: evil.example:PORT` to `/metrics`, `/stats`, `/healthz` and the admin API
  is refused with 403, naming the setting that lets a host in, and leaks no server name or URL;
- `localhost`, `127.0.0.1` and `[::1]` (with the admin port) and any IP address are answered;
- a host listed in `admin_allowed_hosts` is answered (any port when the entry names none, only
  its port when it does);
- a foreign `Origin` is refused like on `/mcp` (`allowed_origins`);
- `mcpctl` keeps working, by IP address and by `localhost`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import harness

MCPCTL = Path(os.environ.get("MCPCTL_BIN", harness.PROXY_BIN.parent / "mcpctl"))
TOKEN = "test-admin-token-0123456789abcdef"
# A server whose name and URL the refused answers must not reveal; nothing listens there.
SECRET_NAME = "payroll"
SECRET_URL = "http://127.0.0.1:9/payroll-mcp"
ROUTES = ["/metrics", "/stats", "/healthz", "/readyz", "/api/v1/servers", "/api/v1/servers/payroll/replicas"]


def config(extra: str = "") -> str:
    return (f'[proxy]\nadmin_token = "{TOKEN}"\n{extra}\n'
            + harness.servers_toml({SECRET_NAME: SECRET_URL}))


def admin_get(proxy: harness.Proxy, path: str, host: str | None,
              origin: str | None = None) -> tuple[int, bytes]:
    """GET `path` from the admin listener with exactly this Host (None: the listener's address)."""
    address = proxy.admin_url.split("://", 1)[1]
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or address}",
             f"Authorization: Bearer {TOKEN}", "Connection: close"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    raw, _ = harness.socket_exchange(proxy.admin_url, ("\r\n".join(lines) + "\r\n\r\n").encode())
    status = harness.status_of(raw)
    assert status is not None, f"no HTTP answer to {path} (Host {host}): {raw[:200]!r}"
    return status, raw.partition(b"\r\n\r\n")[2]


def admin_port(proxy: harness.Proxy) -> str:
    return proxy.admin_url.rsplit(":", 1)[1]


def test_a_foreign_host_is_refused_on_every_admin_route(spawner):
    proxy = spawner.proxy(config())
    port = admin_port(proxy)
    for path in ROUTES:
        for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}"):
            status, body = admin_get(proxy, path, host)
            assert status == 403, f"{path} with Host {host}: HTTP {status} {body[:300]!r}"
            assert b"admin_allowed_hosts" in body, body
            assert SECRET_NAME.encode() not in body.replace(b"evil", b""), body
            assert SECRET_URL.encode() not in body, body
        # A browser's cross-origin request names its page in Origin.
        status, body = admin_get(proxy, path, f"localhost:{port}", origin="http://evil.example")
        assert status == 403, f"{path} with a foreign Origin: HTTP {status} {body[:300]!r}"
        assert b"allowed_origins" in body, body


def test_loopback_names_and_ip_addresses_are_answered(spawner):
    proxy = spawner.proxy(config())
    port = admin_port(proxy)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost",
                 f"10.1.2.3:{port}", f"LocalHost:{port}"):
        for path in ROUTES:
            status, body = admin_get(proxy, path, host)
            assert status == 200, f"{path} with Host {host}: HTTP {status} {body[:300]!r}"
    status, body = admin_get(proxy, "/api/v1/servers", f"localhost:{port}",
                             origin=f"http://localhost:{port}")
    assert status == 200 and SECRET_NAME.encode() in body, (status, body[:300])


def test_a_listed_host_is_answered(spawner):
    proxy = spawner.proxy(config(
        'admin_allowed_hosts = ["Scrape.Internal", "metrics.internal:1"]'))
    port = admin_port(proxy)
    for path in ROUTES:
        status, body = admin_get(proxy, path, f"scrape.internal:{port}")
        assert status == 200, f"{path} with a listed host: HTTP {status} {body[:300]!r}"
        status, _ = admin_get(proxy, path, f"metrics.internal:{port}")
        assert status == 403, f"{path}: an entry with a port admits that port only"
        status, _ = admin_get(proxy, path, f"evil.example:{port}")
        assert status == 403, f"{path}: an unlisted host"
    status, body = admin_get(proxy, "/metrics", f"scrape.internal:{port}")
    assert b"mcp_proxy_" in body, body[:300]


def test_a_malformed_allowed_host_stops_the_start_with_an_example(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(config('admin_allowed_hosts = ["https://scrape.internal/metrics"]'))
    r = subprocess.run([str(harness.PROXY_BIN), "--config", str(cfg), "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0", "--shards", "1"],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "admin allowed host" in out and "mcp-proxy.internal:9090" in out, out


def test_mcpctl_reaches_the_admin_by_address_and_by_localhost(spawner):
    proxy = spawner.proxy(config())
    for url in (proxy.admin_url, f"http://localhost:{admin_port(proxy)}"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_")}
        env.update(MCPCTL_URL=url, MCPCTL_TOKEN=TOKEN)
        r = subprocess.run([str(MCPCTL), "servers", "ls", "--json"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"mcpctl via {url}: {r.returncode} {r.stderr}"
        names = [s["name"] for s in json.loads(r.stdout)["servers"]]
        assert names == [SECRET_NAME], names
