"""The Python SDK's OAuth client (`mcp.client.auth.OAuthClientProvider`) connecting to an MCP
server from its URL alone: 401, Protected Resource Metadata, authorization server metadata,
dynamic client registration, PKCE and `resource`, then `tools/list` and a call.

The browser step follows the authorization server's redirects here (its login and consent
complete by themselves) and stops at the redirect URI, whose query carries the code.

Usage: python_sdk_client.py URL TOOL ARGUMENTS_JSON (the issuer's CA in SSL_CERT_FILE).
Prints one JSON line: the tools, the call's text, whether a 401 was met and registration done.
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

import anyio
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

URL, TOOL, ARGUMENTS = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
REDIRECT = "http://127.0.0.1:9/callback"
seen = {"registered": False, "authorizations": 0}
landed: list[str] = []


class Memory:
    def __init__(self) -> None:
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens) -> None:
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info) -> None:
        self.client = info
        seen["registered"] = True


class StopAtRedirectUri(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if newurl.startswith(REDIRECT):
            landed.append(newurl)
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def follow(authorization_url: str) -> None:
    context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(),
                                         urllib.request.HTTPSHandler(context=context), StopAtRedirectUri())
    try:
        opener.open(authorization_url, timeout=30).read()
    except urllib.error.HTTPError as e:
        if not landed:
            raise RuntimeError(f"authorization stopped: {e.code} {e.read()[:300]!r}") from e


async def redirect_handler(authorization_url: str) -> None:
    seen["authorizations"] += 1
    await anyio.to_thread.run_sync(follow, authorization_url)


async def callback_handler() -> AuthorizationCodeResult:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(landed[-1]).query)
    if "code" not in query:
        raise RuntimeError(f"no code: {landed[-1]}")
    return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0],
                                   iss=query.get("iss", [None])[0])


async def main() -> None:
    provider = OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-proxy python oauth test", redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"], response_types=["code"],
            token_endpoint_auth_method="none"),
        storage=Memory(), redirect_handler=redirect_handler, callback_handler=callback_handler)
    async with create_mcp_http_client(auth=provider) as http, \
            streamable_http_client(URL, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            result = await session.call_tool(TOOL, ARGUMENTS)
    print(json.dumps({"tools": tools, "text": result.content[0].text, **seen}))


anyio.run(main)
