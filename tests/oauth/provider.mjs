// A real OAuth 2.1 / OpenID Connect authorization server for the tests: oidc-provider over
// HTTPS (a test CA), with PKCE, dynamic client registration, resource indicators (RFC 8707:
// access tokens are RS256 JWTs whose aud is the requested resource) and client credentials.
// The login and consent steps complete by themselves for account "alice", granting the scopes
// asked for, so an SDK's OAuthClientProvider can follow the redirects programmatically.
//
// argv[2] is JSON: { port (0: any), cert, key, kids: [signing kid first, ...] }.
// Prints one line {"issuer": ..., "port": ...} once it listens.
import fs from "node:fs";
import https from "node:https";
import crypto from "node:crypto";
import Provider from "oidc-provider";

const options = JSON.parse(process.argv[2]);
const keyDir = options.keyDir;

// One RSA key per kid, kept in keyDir so a restart with the same kid signs with the same key.
function signingKey(kid) {
  const path = `${keyDir}/${kid}.jwk.json`;
  if (fs.existsSync(path)) return JSON.parse(fs.readFileSync(path, "utf8"));
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" };
  fs.writeFileSync(path, JSON.stringify(jwk));
  return jwk;
}

const server = https.createServer({
  cert: fs.readFileSync(options.cert),
  key: fs.readFileSync(options.key),
});

server.listen(options.port || 0, "127.0.0.1", () => {
  const port = server.address().port;
  const issuer = `https://127.0.0.1:${port}`;
  const minter = (id, extra = {}) => ({
    client_id: id,
    client_secret: `${id}-secret-0123456789abcdef`,
    grant_types: ["client_credentials"],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: "client_secret_post",
    ...extra,
  });
  const provider = new Provider(issuer, {
    jwks: { keys: options.kids.map(signingKey) },
    clients: [
      minter("minter"),
      minter("minter-short"),
      // Pre-registered public client (PKCE, loopback redirect) with no scope restriction; a
      // dynamically registered one is limited to the scope it registered with.
      {
        client_id: "mcp-test-client",
        token_endpoint_auth_method: "none",
        application_type: "native",
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        redirect_uris: ["http://127.0.0.1:9/callback"],
      },
    ],
    scopes: ["openid", "offline_access", "mcp:tools", "mcp:admin"],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: "mcp:tools mcp:admin",
          audience: resource,
          accessTokenTTL: client.clientId === "minter-short" ? 2 : 600,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: "RS256" } },
        }),
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
    // The authorization response carries iss (RFC 9207), as the MCP spec asks.
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, Interaction: 600, Session: 600 },
  });
  provider.on("server_error", (ctx, err) => console.error("server_error", err));
  const callback = provider.callback();
  server.on("request", async (req, res) => {
    if (!req.url.startsWith("/interaction/")) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === "login") {
        await provider.interactionFinished(req, res, { login: { accountId: "alice" } },
          { mergeWithLastSubmission: false });
        return;
      }
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(resource, scopes.join(" "));
      }
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } },
        { mergeWithLastSubmission: true });
    } catch (err) {
      console.error("interaction", err);
      res.statusCode = 500;
      res.end(String(err));
    }
  });
  console.log(JSON.stringify({ issuer, port }));
});
