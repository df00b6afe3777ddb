"""TLS on both sides of the proxy, with certificates made here (python `cryptography`).

- The Python SDK (httpx2 under it, verifying against our CA) talks MCP to a TLS listener.
- The listener's certificate is replaced and reloaded (SIGHUP, and the admin API's reload):
  new connections see the new serial, a connection opened before keeps working, and so does
  the SDK session opened before; an unusable new key keeps the running certificate.
- Adding or removing [tls] by reload waits for a restart: named in the answer, the rest applies.
- TLS 1.2 clients are refused unless `min_version = "1.2"`.
- Upstream HTTPS with a private CA and a client certificate: a second proxy with a TLS
  listener that requires client certificates sits in front of server-everything and is the
  https:// upstream of the first. Without the CA, or to the mTLS listener without a client
  certificate, nothing gets through.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import signal
import socket
import ssl
import time
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import harness
from harness import ACCEPT_BOTH, rpc, text_of

ADMIN_TOKEN = "tls-test-admin-token-0123456789"


class Pki:
    """A private CA that issues server and client certificates into a directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-proxy test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_name = name
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                              content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, serial: int, server: bool = True) -> tuple[Path, Path]:
        """Writes `{stem}.pem` and `{stem}.key`; a server cert names localhost and 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.ca_name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                             x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{stem}.pem", self.dir / f"{stem}.key"
        # Written to a temp name and renamed, so a reload never reads half a file.
        tmp = self.dir / f".{stem}.tmp"
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp.replace(cert_path)
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        tmp.replace(key_path)
        return cert_path, key_path

    def context(self, **kw) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def peer_serial(port: int, ctx: ssl.SSLContext) -> int:
    """Serial of the certificate a new TLS connection to the proxy is given."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


def tls_ping(conn: http.client.HTTPSConnection, session: str) -> dict:
    body = json.dumps(rpc("ping", request_id=7))
    conn.request("POST", "/mcp", body=body, headers={
        "Accept": ACCEPT_BOTH, "Content-Type": "application/json", "Mcp-Session-Id": session,
        "MCP-Protocol-Version": harness.PROTOCOL_VERSION})
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, (resp.status, data[:300])
    return harness._messages_of(resp.getheader("content-type") or "", data)[0]


def tls_initialize(conn: http.client.HTTPSConnection) -> str:
    body = json.dumps(rpc("initialize", harness.initialize_params("tls-raw"), request_id=1))
    conn.request("POST", "/mcp", body=body, headers={"Accept": ACCEPT_BOTH, "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    session = resp.getheader("mcp-session-id")
    assert session
    return session


async def sdk_call(url: str, ctx: ssl.SSLContext, tool: str, message: str, hold=None) -> str:
    """One SDK session over TLS calling `tool`; `hold` (an async fn) runs inside the session."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(verify=ctx, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                first = text_of(await session.call_tool(tool, {"message": message}))
                if hold is None:
                    return first
                await hold()
                second = text_of(await session.call_tool(tool, {"message": message + "-after"}))
                return first + "|" + second


def wait_for_serial(port: int, ctx: ssl.SSLContext, serial: int, limit: float = 15.0) -> int:
    deadline = time.monotonic() + limit
    seen = peer_serial(port, ctx)
    while seen != serial and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = peer_serial(port, ctx)
    return seen


def test_sdk_over_tls_and_certificate_reload(spawner, pki):
    upstream = spawner.everything()
    cert, key = pki.issue("server", serial=1001)
    config = (f'[proxy]\nadmin_token = "{ADMIN_TOKEN}"\n\n[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n'
              + harness.servers_toml([("alpha", upstream.url)]))
    proxy = spawner.proxy(config)
    assert proxy.url.startswith("https://"), proxy.url
    ctx = pki.context()
    assert peer_serial(proxy.port, ctx) == 1001

    # A plain keep-alive connection opened before the reload, with a session on it.
    old = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=15)
    session = tls_initialize(old)
    assert tls_ping(old, session).get("result") == {}
    old_sock = old.sock

    async def reload_with_sighup() -> None:
        pki.issue("server", serial=2002)
        proxy.proc.send_signal(signal.SIGHUP)
        assert await anyio.to_thread.run_sync(wait_for_serial, proxy.port, ctx, 2002) == 2002

    # The SDK session spans the reload: calls before and after it succeed.
    got = anyio.run(sdk_call, proxy.url, ctx, "alpha__echo", "tls", reload_with_sighup)
    assert got == "Echo: tls|Echo: tls-after"

    # The connection from before still has the old certificate, and still serves.
    assert tls_ping(old, session).get("result") == {}
    assert old.sock is old_sock
    assert int(old.sock.getpeercert()["serialNumber"], 16) == 1001
    old.close()

    # Reload through the admin API.
    pki.issue("server", serial=3003)
    status, body = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert status == 200, body
    assert peer_serial(proxy.port, ctx) == 3003

    # A key that does not match: the reload is refused, the running certificate is kept.
    other_cert, other_key = pki.issue("other", serial=4004)
    key.write_bytes(other_key.read_bytes())
    status, body = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert status == 400 and "key_file" in json.dumps(body), (status, body)
    assert peer_serial(proxy.port, ctx) == 3003
    assert anyio.run(sdk_call, proxy.url, ctx, "alpha__echo", "still") == "Echo: still"


def test_switching_tls_by_reload_waits_for_a_restart_and_the_rest_of_the_edit_applies(spawner, pki):
    """Adding or removing [tls] cannot apply live (clients would not follow the scheme): the
    reload still succeeds, applies the servers of the same edit, keeps the listener's scheme and
    names `[tls] (on/off)` as not applied until restart."""
    alpha = spawner.everything()
    beta = spawner.everything()
    cert, key = pki.issue("server", serial=5005)
    head = f'[proxy]\nadmin_token = "{ADMIN_TOKEN}"\n\n'
    tls = f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n'
    one = harness.servers_toml([("alpha", alpha.url)])
    two = harness.servers_toml([("alpha", alpha.url), ("beta", beta.url)])
    ctx = pki.context()

    secure = spawner.proxy(head + tls + one)
    secure.config_path.write_text(head + two)
    status, answer = harness.admin_reload(secure, ADMIN_TOKEN)
    assert status == 200, answer
    assert answer["changes"]["added"] == ["beta"], answer
    assert answer["not_applied_until_restart"] == ["[tls] (on/off)"], answer
    assert peer_serial(secure.port, ctx) == 5005

    plain = spawner.proxy(head + one)
    plain.config_path.write_text(head + tls + two)
    status, answer = harness.admin_reload(plain, ADMIN_TOKEN)
    assert status == 200, answer
    assert answer["changes"]["added"] == ["beta"], answer
    assert answer["not_applied_until_restart"] == ["[tls] (on/off)"], answer
    # Still plain HTTP, and beta (discovered in the background) answers through it.
    session = harness.raw_initialize(plain.url)
    deadline = time.monotonic() + 15
    while True:
        _, reply = harness.raw_call_tool(plain.url, session, "beta__echo", {"message": "plain"})
        if (reply and "result" in reply) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply is not None and "plain" in harness.tool_text(reply["result"]), reply


def test_tls12_only_when_configured(spawner, pki):
    upstream = spawner.everything()
    cert, key = pki.issue("server", serial=77)
    tls12 = pki.context(maximum_version=ssl.TLSVersion.TLSv1_2)
    base = f'[tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    strict = spawner.proxy(base + "\n" + harness.servers_toml([("alpha", upstream.url)]), shards=1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_serial(strict.port, tls12)
    lenient = spawner.proxy(base + 'min_version = "1.2"\n\n' + harness.servers_toml([("alpha", upstream.url)]),
                            shards=1)
    assert peer_serial(lenient.port, tls12) == 77


def test_https_upstream_with_private_ca_and_client_certificate(spawner, pki):
    upstream = spawner.everything()
    server_cert, server_key = pki.issue("inner", serial=501)
    client_cert, client_key = pki.issue("client", serial=502, server=False)
    # The inner proxy: TLS listener that requires a client certificate from our CA.
    inner = spawner.proxy(
        f'[tls]\ncert_file = "{server_cert}"\nkey_file = "{server_key}"\nclient_ca_file = "{pki.ca_file}"\n\n'
        + harness.servers_toml([("alpha", upstream.url)]), shards=1)
    # The outer proxy: plain listener, the inner one as an https:// upstream with CA and client cert.
    outer = spawner.proxy(
        f'[[servers]]\nname = "secure"\nurl = "{inner.url}"\ntimeout = "30s"\n'
        f'tls = {{ ca_file = "{pki.ca_file}", client_cert_file = "{client_cert}", client_key_file = "{client_key}" }}\n')
    got = anyio.run(_plain_sdk_call, outer.url, "secure__alpha__echo", "through mTLS")
    assert got == "Echo: through mTLS"

    # Without a client certificate, the inner proxy answers nothing.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        conn = http.client.HTTPSConnection("127.0.0.1", inner.port, context=pki.context(), timeout=10)
        tls_initialize(conn)

    # With the built-in web roots instead of our CA, the upstream is not trusted.
    untrusted = spawner.proxy(f'[[servers]]\nname = "secure"\nurl = "{inner.url}"\ntimeout = "30s"\n', shards=1)
    deadline = time.monotonic() + 15
    while "invalid peer certificate" not in untrusted.stderr_tail(200) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "invalid peer certificate" in untrusted.stderr_tail(200), untrusted.stderr_tail(40)
    assert anyio.run(_plain_tool_names, untrusted.url).isdisjoint({"secure__alpha__echo"})


async def _plain_sdk_call(url: str, tool: str, message: str) -> str:
    async with harness.sdk_session(url) as s:
        r = await s.call_tool(tool, {"message": message})
        assert not r.is_error, text_of(r)
        return text_of(r)


async def _plain_tool_names(url: str) -> set[str]:
    async with harness.sdk_session(url) as s:
        return {t.name for t in (await s.list_tools()).tools}
