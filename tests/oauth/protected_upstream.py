"""An MCP server that is an OAuth protected resource of its own: the Python SDK's MCPServer
with its bearer-token middleware, verifying RS256 JWTs from the test authorization server
(aud must be this server's URL, scope mcp:tools).

Every bearer token it is sent is recorded; the tool `tokens_seen` returns them (JSON list), so
a test can assert what reached the upstream.

Usage: protected_upstream.py PORT ISSUER CA_FILE
"""

import json
import ssl
import sys

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

PORT, ISSUER, CA = int(sys.argv[1]), sys.argv[2], sys.argv[3]
URL = f"http://127.0.0.1:{PORT}/mcp"
SEEN: list[str] = []


class Verifier:
    def __init__(self) -> None:
        self.jwks = jwt.PyJWKClient(f"{ISSUER}/jwks", ssl_context=ssl.create_default_context(cafile=CA))

    async def verify_token(self, token: str) -> AccessToken | None:
        SEEN.append(token)
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["RS256"], audience=URL, issuer=ISSUER)
        except jwt.PyJWTError:
            return None
        return AccessToken(token=token, client_id=claims.get("client_id", ""),
                           scopes=claims.get("scope", "").split(), expires_at=claims["exp"],
                           resource=URL, subject=claims.get("sub"))


server = MCPServer("protected", token_verifier=Verifier(),
                   auth=AuthSettings(issuer_url=ISSUER, resource_server_url=URL, required_scopes=["mcp:tools"]))


@server.tool()
def tokens_seen() -> str:
    """The bearer tokens this server was sent, in order."""
    return json.dumps(SEEN)


server.run(transport="streamable-http", host="127.0.0.1", port=PORT)
