"""Client identity on /mcp: API keys, JWTs, per-client policy and per-client limits.

Real peers: the official Python SDK (`mcp` 2.3.0) as the client, sending its credentials as an
`Authorization: Bearer` header; server-everything over Streamable HTTP (`everything`) and
@modelcontextprotocol/server-memory over stdio (`memory`) as upstreams, behind a proxy with two
shards (so requests of one session land on either shard and are forwarded). JWTs are made here
with PyJWT and `cryptography`, against a JWKS file holding one HS256, one RS256 and one ES256 key.

What the proxy is held to (docs/auth.md):
- no credentials: 401 with `WWW-Authenticate: Bearer`; wrong, expired or forged ones (bad
  signature, wrong aud/iss, alg none, unknown kid): 401 with a JSON-RPC error saying which;
  a valid token whose subject no client claims: 403;
- a client sees and calls only the servers and tools its policy names; a hidden tool is
  answered like a tool that does not exist; refusals are counted in
  mcp_proxy_auth_denied_total; another client sees everything;
- a session answers only the credentials that opened it, also after a restart (sealed id);
- rate limit: 429 with Retry-After, then requests pass again; max_sessions: the extra
  initialize is refused with a message naming the limit, and a freed slot can be reused;
- reloading [auth]: test_auth_reload.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

import harness
from harness import NODE_BIN, rpc, initialize_params, raw_request, text_of

MEMORY_BIN = NODE_BIN / "mcp-server-memory"

KEY_FULL = "full-access-key-0123456789abcdef"
KEY_MEM = "memory-only-key-0123456789abcdef"
KEY_RATE = "rate-limited-key-0123456789abcdef"
KEY_TWO = "two-sessions-key-0123456789abcdef"

ISSUER = "https://issuer.test"
AUDIENCE = "mcp-proxy-test"
HS_SECRET = b"hs256-test-secret-of-at-least-32-bytes!"
SESSION_KEY = "5a" * 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """One key per accepted algorithm, and the JWKS file publishing them."""

    def __init__(self, directory: Path) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        rs = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        es = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        rs.update(kid="rs", alg="RS256", use="sig")
        es.update(kid="es", alg="ES256", use="sig")
        hs = {"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64url(HS_SECRET)}
        self.jwks = directory / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [hs, rs, es]}))

    def token(self, alg: str = "RS256", sub: str = "alice", **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key, kid = {"HS256": (HS_SECRET, "hs"), "RS256": (self.rsa, "rs"), "ES256": (self.ec, "es")}[alg]
        return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def config(keys: Keys, memfile: Path, everything_url: str) -> str:
    return f"""
[proxy]
session_key = "{SESSION_KEY}"

[auth]
enabled = true
jwks_file = "{keys.jwks}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_seconds = 5

[[auth.clients]]
name = "full"
api_keys = ["{KEY_FULL}"]
subjects = ["alice"]

[[auth.clients]]
name = "mem-only"
api_keys = ["{KEY_MEM}"]
servers = ["memory"]

[[auth.clients]]
name = "echo-only"
subjects = ["svc-*"]
servers = ["everything", "proxy"]
tools = ["everything__echo", "proxy__*"]

[[auth.clients]]
name = "limited"
api_keys = ["{KEY_RATE}"]
rate_limit = "2/s"
burst = 3

[[auth.clients]]
name = "two"
api_keys = ["{KEY_TWO}"]
max_sessions = 2

[[servers]]
name = "everything"
url = "{everything_url}"
timeout = "30s"

[[servers]]
name = "memory"
command = "{MEMORY_BIN}"
env = {{ MEMORY_FILE_PATH = "{memfile}" }}
"""


class Topology:
    def __init__(self, proxy: harness.Proxy, keys: Keys, text: str) -> None:
        self.proxy, self.keys, self.config_text = proxy, keys, text

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    directory = tmp_path_factory.mktemp("auth")
    keys = Keys(directory)
    started = []
    try:
        everything = harness.start_everything_http()
        started.append(everything)
        text = config(keys, directory / "memory.jsonl", everything.url)
        proxy = harness.start_proxy(text, shards=2)
        started.append(proxy)
        yield Topology(proxy, keys, text)
    finally:
        for p in reversed(started):
            p.kill()


def run(fn, *args):
    return anyio.run(fn, *args)


@asynccontextmanager
async def session(url: str, credential: str | None, statuses: list | None = None):
    """An initialized SDK session sending `Authorization: Bearer <credential>` on every request."""
    headers = {"Authorization": f"Bearer {credential}"} if credential else None
    client = create_mcp_http_client(headers=headers)
    if statuses is not None:
        async def record(response):
            statuses.append((response.status_code, response.headers.get("www-authenticate")))
        client.event_hooks["response"].append(record)
    async with client, streamable_http_client(url, http_client=client) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            yield s


def mcp_error(fn) -> MCPError:
    """Runs `fn`, expecting an MCPError (the SDK raises it wrapped in task-group exception groups)."""
    def find(e: BaseException) -> MCPError | None:
        if isinstance(e, MCPError):
            return e
        for inner in getattr(e, "exceptions", ()):
            if (found := find(inner)) is not None:
                return found
        return None

    try:
        run(fn)
    except BaseException as e:  # noqa: BLE001 - re-raised unless it carries the MCPError
        if (found := find(e)) is not None:
            return found
        raise
    pytest.fail("the SDK raised no MCPError")


def sdk_refusal(url: str, credential: str | None) -> tuple[str, list]:
    """Initialize with `credential` through the SDK; returns the error message and HTTP statuses."""
    statuses: list = []

    async def go():
        with anyio.fail_after(30):
            async with session(url, credential, statuses):
                pass

    return str(mcp_error(go)), statuses


def raw_init(url: str, credential: str | None):
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return raw_request(url, body=rpc("initialize", initialize_params()), headers=headers)


def error_message(r) -> str:
    assert r.messages, f"HTTP {r.status} without a JSON-RPC body: {r.body[:200]!r}"
    return r.messages[0]["error"]["message"]


def denied_now(topo, client: str, reason: str) -> float:
    """mcp_proxy_auth_denied_total{client, reason} from the admin /metrics."""
    with urllib.request.urlopen(f"{topo.proxy.admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mcp_proxy_auth_denied_total{") and f'client="{client}"' in line \
                and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def denied(topo, client: str, reason: str, at_least: float = 0, within: float = 10) -> float:
    """mcp_proxy_auth_denied_total{client, reason} once it reaches `at_least`, or its value when
    `within` seconds pass first. The proxy serves a /metrics rendering again for 100 ms
    (admin::METRICS_MAX_AGE): a scrape right after a quick exchange that followed another scrape
    reads the older rendering, from before the refusals."""
    deadline = time.monotonic() + within
    while True:
        value = denied_now(topo, client, reason)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def stream_metrics(admin_url: str) -> tuple[dict[str, float], float]:
    """mcp_proxy_event_streams_ended_total by reason, and mcp_proxy_event_streams summed over
    shards, from the admin /metrics."""
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    ended: dict[str, float] = {}
    open_streams = 0.0
    for line in text.splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith("mcp_proxy_event_streams_ended_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            ended[reason] = ended.get(reason, 0.0) + float(value)
        elif line.startswith("mcp_proxy_event_streams{"):
            open_streams += float(value)
    return ended, open_streams


def streams_ended(admin_url: str, reason: str, at_least: float, within: float = 30) -> float:
    """mcp_proxy_event_streams_ended_total{reason} once it reaches `at_least` (the proxy counts
    a stream just after writing its end, and a /metrics rendering is reused for 100 ms), or
    its value when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        value = stream_metrics(admin_url)[0].get(reason, 0.0)
        if value >= at_least or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def tool_names(result) -> set[str]:
    return {t.name for t in result.tools}


# ---------------------------------------------------------------------------------------------
# Authentication


def test_missing_and_wrong_api_keys_get_401_with_bearer_challenge(topo):
    r = raw_init(topo.url, None)
    assert r.status == 401
    assert r.header("www-authenticate").startswith("Bearer")
    assert "missing credentials" in error_message(r)

    r = raw_init(topo.url, "not-a-key-0123456789abcdef")
    assert r.status == 401
    assert 'error="invalid_token"' in r.header("www-authenticate")
    assert "unknown API key" in error_message(r)

    message, statuses = sdk_refusal(topo.url, "wrong-key-0123456789abcdef")
    assert "unknown API key" in message
    assert statuses and statuses[0][0] == 401 and statuses[0][1].startswith("Bearer")

    message, _ = sdk_refusal(topo.url, None)
    assert "missing credentials" in message


@pytest.mark.parametrize("alg", ["HS256", "RS256", "ES256"])
def test_valid_jwts_of_each_algorithm_work(topo, alg):
    token = topo.keys.token(alg)

    async def go():
        async with session(topo.url, token) as s:
            tools = tool_names(await s.list_tools())
            echo = await s.call_tool("everything__echo", {"message": alg})
            graph = await s.call_tool("memory__read_graph", {})
            return tools, echo, graph

    tools, echo, graph = run(go)
    assert "everything__echo" in tools and "memory__read_graph" in tools
    assert text_of(echo) == f"Echo: {alg}"
    assert not graph.is_error


def hs256_raw(header: dict, payload: dict, secret: bytes) -> str:
    """An HS256 JWT made by hand (PyJWT refuses a PEM key as an HMAC secret, rightly)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    tag = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(tag)}"


def forged_tokens(keys: Keys) -> dict[str, tuple[str, str]]:
    """Each bad token, with a fragment its refusal must contain."""
    now = int(time.time())
    good = keys.token("RS256")
    header, claims, _ = good.split(".")
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    rsa_public = keys.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 600}
    return {
        "expired": (keys.token("ES256", exp=now - 120), "expired"),
        "bad signature": (jwt.encode(payload, other_rsa, algorithm="RS256", headers={"kid": "rs"}),
                          "signature is invalid"),
        "altered claims": (f"{header}.{b64url(json.dumps({**payload, 'sub': 'mallory'}).encode())}."
                           f"{good.split('.')[2]}", "signature is invalid"),
        "wrong audience": (keys.token("HS256", aud="someone-else"), "audience"),
        "wrong issuer": (keys.token("RS256", iss="https://evil.test"), "issuer"),
        "alg none": (f"{none_header}.{claims}.", "algorithm"),
        # The classic confusion: HMAC keyed with the RSA public key the JWKS publishes.
        "HS256 keyed with the RSA public key": (hs256_raw({"alg": "HS256", "kid": "rs"}, payload, rsa_public),
                                                "signature is invalid"),
        "unknown kid": (jwt.encode(payload, HS_SECRET, algorithm="HS256", headers={"kid": "nope"}),
                        "key id"),
        "no exp": (keys.token("ES256", exp=None), "no exp"),
    }


def test_wrong_expired_and_forged_jwts_are_refused_with_the_reason(topo):
    for case, (token, fragment) in forged_tokens(topo.keys).items():
        r = raw_init(topo.url, token)
        assert r.status == 401, f"{case}: HTTP {r.status} {r.body[:200]!r}"
        assert r.header("www-authenticate").startswith("Bearer"), case
        assert fragment in error_message(r), f"{case}: {error_message(r)}"
    message, statuses = sdk_refusal(topo.url, topo.keys.token("RS256", exp=int(time.time()) - 600))
    assert "expired" in message and "fresh token" in message
    assert statuses[0][0] == 401
    assert denied(topo, "unknown", "forged", at_least=4) >= 4
    assert denied(topo, "unknown", "expired", at_least=2) >= 2


def test_a_valid_token_of_an_unknown_subject_is_forbidden(topo):
    r = raw_init(topo.url, topo.keys.token("HS256", sub="mallory"))
    assert r.status == 403
    assert "mallory" in error_message(r) and "not allowed" in error_message(r)
    message, statuses = sdk_refusal(topo.url, topo.keys.token("ES256", sub="mallory"))
    assert "not allowed" in message and statuses[0][0] == 403


# ---------------------------------------------------------------------------------------------
# Policy


def test_a_client_allowed_one_server_neither_sees_nor_calls_the_others(topo):
    before = denied_now(topo, "mem-only", "policy")

    async def restricted():
        async with session(topo.url, KEY_MEM) as s:
            tools = tool_names(await s.list_tools())
            prompts = {p.name for p in (await s.list_prompts()).prompts}
            resources = [r.uri for r in (await s.list_resources()).resources]
            created = await s.call_tool("memory__create_entities", {"entities": [
                {"name": "auth-test", "entityType": "test", "observations": ["seen"]}]})
            refused = {}
            for name, args in [("everything__echo", {"message": "hi"}),
                               ("proxy__call_tool", {"name": "everything__echo",
                                                     "arguments": {"message": "hi"}})]:
                with pytest.raises(MCPError) as e:
                    await s.call_tool(name, args)
                refused[name] = str(e.value)
            with pytest.raises(MCPError) as e:
                await s.get_prompt("everything__simple-prompt", {})
            refused["prompt"] = str(e.value)
            with pytest.raises(MCPError) as e:
                await s.call_tool("everything__no-such-tool", {})
            refused["missing"] = str(e.value)
            return tools, prompts, resources, created, refused

    async def everything():
        async with session(topo.url, KEY_FULL) as s:
            tools = tool_names(await s.list_tools())
            echo = await s.call_tool("everything__echo", {"message": "full"})
            return tools, echo

    tools, prompts, resources, created, refused = run(restricted)
    assert tools and all(t.startswith("memory__") for t in tools), tools
    assert "memory__read_graph" in tools
    assert not any(p.startswith("everything__") for p in prompts), prompts
    assert not any(str(u).startswith("everything+") for u in resources), resources
    assert not created.is_error
    assert refused["everything__echo"] == "unknown tool: everything__echo"
    assert refused["proxy__call_tool"] == "unknown tool: proxy__call_tool"
    assert "unknown prompt" in refused["prompt"]
    # A hidden tool is refused exactly like one that does not exist.
    assert refused["missing"] == "unknown tool: everything__no-such-tool"
    # Three refusals, each counted once (echo, proxy__call_tool, the prompt; a name that does
    # not exist is no refusal).
    assert denied(topo, "mem-only", "policy", at_least=before + 3) == before + 3

    full_tools, echo = run(everything)
    assert {"everything__echo", "memory__read_graph", "proxy__search_tools"} <= full_tools
    assert text_of(echo) == "Echo: full"
    assert full_tools > tools


def test_policy_holds_for_2026_07_28_clients_too(topo):
    """A stateless-era request has no session of its own; the policy still follows its key."""
    from test_stateless import modern_body, modern_headers

    def modern(credential, method, params=None, name=None):
        headers = {**modern_headers(method, name), "Authorization": f"Bearer {credential}"}
        return raw_request(topo.url, body=modern_body(method, params), headers=headers)

    listed = modern(KEY_MEM, "tools/list")
    assert listed.status == 200, listed.body
    tools = {t["name"] for t in listed.messages[0]["result"]["tools"]}
    assert tools and all(t.startswith("memory__") for t in tools), tools
    hidden = modern(KEY_MEM, "tools/call", {"name": "everything__echo", "arguments": {"message": "x"}},
                    name="everything__echo")
    assert hidden.messages[0]["error"]["message"] == "unknown tool: everything__echo"
    full = modern(KEY_FULL, "tools/list")
    assert "everything__echo" in {t["name"] for t in full.messages[0]["result"]["tools"]}
    assert modern("not-a-key", "tools/list").status == 401


def test_tool_patterns_also_govern_the_proxys_own_tools(topo):
    token = topo.keys.token("ES256", sub="svc-echo")

    async def go():
        async with session(topo.url, token) as s:
            tools = tool_names(await s.list_tools())
            echo = await s.call_tool("everything__echo", {"message": "allowed"})
            via_proxy = await s.call_tool("proxy__call_tool", {"name": "everything__echo",
                                                               "arguments": {"message": "relayed"}})
            with pytest.raises(MCPError) as e:
                await s.call_tool("everything__get-sum", {"a": 1, "b": 2})
            direct = str(e.value)
            with pytest.raises(MCPError) as e:
                await s.call_tool("proxy__call_tool", {"name": "everything__get-sum",
                                                       "arguments": {"a": 1, "b": 2}})
            bypass = str(e.value)
            found = await s.call_tool("proxy__search_tools",
                                      {"query": "echo a message back; add two numbers, sum", "k": 10})
            with pytest.raises(MCPError) as e:
                await s.call_tool("memory__read_graph", {})
            other_server = str(e.value)
            workflow = await s.call_tool("proxy__orchestrate_workflow", {"workflow": {"steps": [
                {"id": "ok", "tool": "everything__echo", "arguments": {"message": "step"}}]}})
            with pytest.raises(MCPError) as e:
                await s.call_tool("proxy__orchestrate_workflow", {"workflow": {"steps": [
                    {"id": "ok", "tool": "everything__echo", "arguments": {"message": "step"}},
                    {"id": "hidden", "tool": "everything__get-sum", "arguments": {"a": 1, "b": 2}}]}})
            hidden_step = str(e.value)
            return tools, echo, via_proxy, direct, bypass, found, other_server, workflow, hidden_step

    tools, echo, via_proxy, direct, bypass, found, other_server, workflow, hidden_step = run(go)
    assert workflow.structured_content["status"] == "succeeded", workflow.structured_content
    # A workflow step cannot reach a hidden tool either; it reads as unknown.
    assert 'unknown tool "everything__get-sum"' in hidden_step, hidden_step
    assert {t for t in tools if not t.startswith("proxy__")} == {"everything__echo"}, tools
    assert "proxy__call_tool" in tools
    assert text_of(echo) == "Echo: allowed"
    assert text_of(via_proxy) == "Echo: relayed"
    assert direct == "unknown tool: everything__get-sum"
    assert other_server == "unknown tool: memory__read_graph"
    # proxy__call_tool does not open a way around the policy.
    assert 'unknown tool "everything__get-sum"' in bypass, bypass
    names = {t["name"] for t in found.structured_content["tools"]}
    # Search finds what the client may call, and nothing else (get-sum matches the query too);
    # the proxy's own tools, which this client may call, rank below by meaning.
    assert {n for n in names if not n.startswith("proxy__")} == {"everything__echo"}, names
    assert found.structured_content["tools"][0]["name"] == "everything__echo", names


# ---------------------------------------------------------------------------------------------
# Sessions belong to their credentials


def test_a_session_refuses_other_credentials_even_after_a_restart(topo, spawner):
    r = raw_init(topo.url, KEY_FULL)
    assert r.status == 200
    sid = r.header("mcp-session-id")

    def ping(url, credential):
        return raw_request(url, body=rpc("ping"), session=sid,
                           headers={"Authorization": f"Bearer {credential}"})

    # New connections each time, so both shards see the session (forwarded to its owner).
    for _ in range(4):
        assert ping(topo.url, KEY_FULL).status == 200
        other = ping(topo.url, KEY_MEM)
        assert other.status == 403
        assert "opened with other credentials" in error_message(other)
    # A JWT of the same client is another principal: refused as well.
    assert ping(topo.url, topo.keys.token("RS256", sub="alice")).status == 403
    no_credentials = raw_request(topo.url, body=rpc("ping"), session=sid)
    assert no_credentials.status == 401

    # Another proxy with the same session_key restores the session from its id, owner included.
    second = spawner.proxy(topo.config_text)
    assert ping(second.url, KEY_MEM).status == 403
    assert ping(second.url, KEY_FULL).status == 200
    assert denied(topo, "mem-only", "session_mismatch", at_least=4) >= 4


# ---------------------------------------------------------------------------------------------
# Streams end with their credential


class EventStream:
    """One request whose text/event-stream answer is read as it arrives, on its own connection."""

    def __init__(self, url: str, credential: str, sid: str, body: dict | None = None,
                 last_event_id: str | None = None) -> None:
        host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {credential}", "Mcp-Session-Id": sid,
                   "MCP-Protocol-Version": harness.PROTOCOL_VERSION, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers.update({"Accept": harness.ACCEPT_BOTH, "Content-Type": "application/json"})
        self.conn.request("POST" if body is not None else "GET", "/mcp", body=data, headers=headers)
        self.resp = self.conn.getresponse()
        self.text = ""
        ctype = self.resp.getheader("content-type", "")
        if self.resp.status != 200 or not ctype.startswith("text/event-stream"):
            detail = self.resp.read(500)
            self.close()
            raise AssertionError(f"expected an event stream: HTTP {self.resp.status} {ctype!r} {detail!r}")

    def ended_within(self, seconds: float) -> bool:
        """Reads until the stream ends (True) or `seconds` pass with it open (False). A stream
        cut without the chunked terminator (not a clean end) raises IncompleteRead."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.conn.sock.settimeout(left)
            try:
                line = self.resp.readline()
            except (TimeoutError, socket.timeout):
                return False
            if not line:
                return True
            self.text += line.decode(errors="replace")
        return False

    def last_event_id(self) -> str | None:
        ids = [line[3:].strip() for line in self.text.splitlines() if line.startswith("id:")]
        return ids[-1] if ids else None

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            self.conn.close()


def open_session(url: str, credential: str) -> str:
    r = raw_init(url, credential)
    assert r.status == 200, (r.status, r.body[:300])
    sid = r.header("mcp-session-id")
    n = raw_request(url, body={"jsonrpc": "2.0", "method": "notifications/initialized"}, session=sid,
                    headers={"Authorization": f"Bearer {credential}"})
    assert n.status in (200, 202), n.status
    return sid


def short_lived(topo) -> str:
    """alice's token, accepted for a few more seconds: exp in 1 s, plus the module's 5 s leeway."""
    return topo.keys.token(sub="alice", exp=int(time.time()) + 1)


def assert_refused_as_expired(topo, sid: str, token: str) -> None:
    again = raw_request(topo.url, method="GET", session=sid, accept="text/event-stream",
                        headers={"Authorization": f"Bearer {token}"})
    assert again.status == 401, (again.status, again.body[:300])
    challenge = again.header("www-authenticate")
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, challenge
    assert "expired" in error_message(again)


def test_a_get_stream_ends_when_its_token_expires_and_an_api_keys_stays_open(topo):
    before = stream_metrics(topo.proxy.admin_url)[0].get("token_expired", 0.0)
    token = short_lived(topo)
    sid = open_session(topo.url, token)
    control_sid = open_session(topo.url, KEY_FULL)
    streams: list[EventStream] = []
    try:
        expiring = EventStream(topo.url, token, sid)
        streams.append(expiring)
        control = EventStream(topo.url, KEY_FULL, control_sid)
        streams.append(control)
        # Bounded, not timed: the token is refused some 7 s from now, the stream must end by 60 s.
        assert expiring.ended_within(60), "the GET stream outlived its token"
        # Operators see why: the end is counted as an expired token.
        expired = streams_ended(topo.proxy.admin_url, "token_expired", before + 1)
        assert expired >= before + 1, f"token_expired went from {before} to {expired}"
        # The stream ended no earlier than the token: reconnecting with it is refused.
        assert_refused_as_expired(topo, sid, token)
        assert not control.ended_within(1.0), "a stream opened with an API key must stay open"
        # The session lives on; only its access ended: a fresh token of the same subject reopens it.
        streams.append(EventStream(topo.url, topo.keys.token(sub="alice"), sid))
    finally:
        for s in streams:
            s.close()


def test_a_streamed_answer_ends_when_its_token_expires_and_resumes_with_a_fresh_one(topo):
    token = short_lived(topo)
    sid = open_session(topo.url, token)
    # 15 s of progress notifications before the result: longer than the token lives.
    call = rpc("tools/call", {"name": "everything__trigger-long-running-operation",
                              "arguments": {"duration": 15, "steps": 15},
                              "_meta": {"progressToken": "expiring"}})
    streams = [EventStream(topo.url, token, sid, body=call)]
    try:
        answer = streams[0]
        assert answer.ended_within(60), "the streamed answer outlived its token"
        assert "notifications/progress" in answer.text, answer.text[:500]
        assert '"result"' not in answer.text, "the answer ended early for another reason"
        assert_refused_as_expired(topo, sid, token)
        # The call went on upstream; with a fresh token the client resumes its stream from the
        # last event it saw and gets the rest, result included.
        seen = answer.last_event_id()
        assert seen, answer.text[:500]
        rest = EventStream(topo.url, topo.keys.token(sub="alice"), sid, last_event_id=seen)
        streams.append(rest)
        assert rest.ended_within(60), "the resumed stream ends with the answer"
        assert f'"id":{call["id"]}' in rest.text.replace(" ", "") and '"result"' in rest.text, rest.text[-500:]
    finally:
        for s in streams:
            s.close()


def test_a_client_that_closes_its_get_stream_is_counted_as_client_closed(spawner, tmp_path):
    # A proxy of its own: a stream another test closed would be counted whenever the proxy next
    # writes to it, so on a shared proxy this count could come from elsewhere.
    keys = Keys(tmp_path)
    upstream = spawner.everything()
    proxy = spawner.proxy(config(keys, tmp_path / "memory.jsonl", upstream.url))
    sid = open_session(proxy.url, KEY_FULL)
    # server-everything then logs to the session every 5 s, outside any request: the proxy
    # writes each message to the GET stream, which is how it finds the client gone.
    call = rpc("tools/call", {"name": "everything__toggle-simulated-logging", "arguments": {}})
    r = raw_request(proxy.url, body=call, session=sid, headers={"Authorization": f"Bearer {KEY_FULL}"})
    assert r.status == 200 and r.response_for(call["id"]), (r.status, r.body[:300])
    stream = EventStream(proxy.url, KEY_FULL, sid)
    try:
        # Read up to the first log message (a read that times out fails the test).
        stream.conn.sock.settimeout(30)
        while "notifications/message" not in stream.text:
            line = stream.resp.readline()
            assert line, f"the GET stream ended: {stream.text[:500]}"
            stream.text += line.decode(errors="replace")
        # The stream is counted as the proxy starts writing it; /metrics may lag by 100 ms.
        deadline = time.monotonic() + 10
        while stream_metrics(proxy.admin_url)[1] != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stream_metrics(proxy.admin_url)[1] == 1, "the open GET stream is not counted open"
    finally:
        stream.close()
    closed = streams_ended(proxy.admin_url, "client_closed", 1, within=60)
    assert closed == 1, f"client_closed is {closed}, want the one closed GET stream"
    ended, open_streams = stream_metrics(proxy.admin_url)
    assert ended.get("token_expired") == 0 and ended.get("credential_revoked") == 0, ended
    assert open_streams == 0, open_streams


# ---------------------------------------------------------------------------------------------
# Limits


def test_rate_limit_answers_429_with_retry_after_and_recovers(topo):
    headers = {"Authorization": f"Bearer {KEY_RATE}"}
    init = None
    for _ in range(20):
        init = raw_init(topo.url, KEY_RATE)
        if init.status == 200:
            break
        time.sleep(1)
    assert init is not None and init.status == 200
    sid = init.header("mcp-session-id")
    statuses = []
    limited = None
    # burst 3 per shard and two shards: at most 6 pass before one is refused.
    for _ in range(12):
        r = raw_request(topo.url, body=rpc("ping"), session=sid, headers=headers)
        statuses.append(r.status)
        if r.status == 429:
            limited = r
            break
    assert limited is not None, f"never limited: {statuses}"
    assert set(statuses[:-1]) == {200}, statuses
    retry_after = int(limited.header("retry-after"))
    assert retry_after >= 1
    assert "rate limit" in error_message(limited) and "limited" in error_message(limited)
    time.sleep(retry_after + 0.2)
    again = raw_request(topo.url, body=rpc("ping"), session=sid, headers=headers)
    assert again.status == 200, again.body
    assert denied(topo, "limited", "rate_limited", at_least=1) >= 1

    # The SDK surfaces the refusal as an error carrying the proxy's message.
    async def burst():
        async with session(topo.url, KEY_RATE) as s:
            for _ in range(12):
                await s.send_ping()

    time.sleep(2)
    assert "rate limit" in str(mcp_error(burst))


def test_sessions_per_client_are_limited_and_freed(topo):
    async def go():
        async with session(topo.url, KEY_TWO) as first, session(topo.url, KEY_TWO) as second:
            await first.send_ping()
            await second.send_ping()
            third = raw_init(topo.url, KEY_TWO)
            other_client = raw_init(topo.url, KEY_FULL)
        # Both sessions ended (the SDK sends DELETE on close): a new one is allowed.
        async with session(topo.url, KEY_TWO) as again:
            tools = tool_names(await again.list_tools())
        return third, other_client, tools

    third, other_client, tools = run(go)
    assert third.status == 429
    assert "already has 2 open sessions" in error_message(third)
    assert "max_sessions" in error_message(third)
    assert other_client.status == 200, "another client's sessions are not counted"
    assert "everything__echo" in tools
    assert denied(topo, "two", "too_many_sessions", at_least=1) >= 1


def test_without_auth_the_endpoint_stays_open(spawner):
    everything = spawner.everything()
    proxy = spawner.proxy([("everything", everything.url)])

    async def go():
        async with session(proxy.url, None) as s:
            return await s.call_tool("everything__echo", {"message": "open"})

    assert text_of(run(go)) == "Echo: open"


def test_the_admin_api_wants_its_own_token_not_a_client_key(topo):
    """[auth] clients do not open the admin API: it keeps its own bearer token."""
    for headers, fragment in [({}, "missing token"),
                              ({"Authorization": f"Bearer {KEY_FULL}"}, "wrong admin token"),
                              ({"Authorization": "Bearer " + "x" * 40}, "wrong admin token")]:
        req = urllib.request.Request(f"{topo.proxy.admin_url}/api/v1/servers", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
        assert fragment in e.value.read().decode()
