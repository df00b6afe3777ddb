// The TypeScript SDK's OAuth client connecting to an MCP server from its URL alone: the
// transport's 401 leads the SDK's auth() through the Protected Resource Metadata to the
// authorization server, dynamic client registration, PKCE and a token for the server's URL.
// The browser step is done here by following the authorization server's redirects (its
// login and consent complete by themselves), so the redirect URL is never actually served.
//
// argv[2]: the MCP URL; argv[3]: a tool to call; argv[4]: its arguments (JSON); argv[5]: a
// pre-registered client_id (without it, the client registers dynamically).
// Prints one JSON line: the tools, the call's text, the access token's claims, the statuses seen.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const url = new URL(process.argv[2]);
const tool = process.argv[3];
const args = JSON.parse(process.argv[4] || "{}");
const preRegistered = process.argv[5];
const redirectUrl = "http://127.0.0.1:9/callback";
const seen = { statuses: [], authorizations: 0, registered: false };

class TestProvider {
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return {
      client_name: "mcp-proxy oauth test",
      redirect_uris: [redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      application_type: "native",
    };
  }
  clientInformation() { return this.client ?? (preRegistered && { client_id: preRegistered }); }
  saveClientInformation(info) { this.client = info; seen.registered = true; }
  tokens() { return this.saved; }
  saveTokens(tokens) { this.saved = tokens; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
  async redirectToAuthorization(authorizationUrl) {
    seen.authorizations += 1;
    seen.authorizationUrl = authorizationUrl.toString();
    this.code = await followAuthorization(authorizationUrl);
  }
}

async function followAuthorization(start) {
  const jar = new Map();
  let next = start.toString();
  for (let hop = 0; hop < 12; hop++) {
    const response = await fetch(next, {
      redirect: "manual",
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; ") },
    });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const at = pair.indexOf("=");
      jar.set(pair.slice(0, at).trim(), pair.slice(at + 1));
    }
    const location = response.headers.get("location");
    if (!location) throw new Error(`authorization stopped at ${next}: ${response.status} ${await response.text()}`);
    const target = new URL(location, next);
    if (target.toString().startsWith(redirectUrl)) {
      const code = target.searchParams.get("code");
      if (!code) throw new Error(`no code in ${target}`);
      return code;
    }
    next = target.toString();
  }
  throw new Error("too many redirects");
}

const recording = async (input, init) => {
  const response = await fetch(input, init);
  if (String(input).startsWith(url.origin)) {
    seen.statuses.push([response.status, response.headers.get("www-authenticate")]);
  }
  return response;
};

const provider = new TestProvider();
const client = new Client({ name: "oauth-test", version: "1.0.0" });
let transport;

async function connect() {
  transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: recording });
  await client.connect(transport);
}

// An UnauthorizedError means the SDK sent the user to authorize (first time, or a step-up
// for a scope): finish with the code and try again, a few times at most.
async function authorized(step) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (!(err instanceof UnauthorizedError) || attempt >= 3) throw err;
      await transport.finishAuth(provider.code);
    }
  }
}

await authorized(connect);
const tools = (await authorized(() => client.listTools())).tools.map((t) => t.name);
let text = null;
if (tool) {
  const result = await authorized(() => client.callTool({ name: tool, arguments: args }));
  text = result.content?.[0]?.text ?? null;
}
const access = provider.tokens()?.access_token ?? "";
const claims = JSON.parse(Buffer.from(access.split(".")[1] ?? "", "base64url").toString() || "{}");
console.log(JSON.stringify({ tools, text, claims, ...seen }));
await client.close();
