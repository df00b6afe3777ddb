// A real OAuth 2.1 / OpenID Connect authorization server for the tests: oidc-provider over
// HTTPS (a test CA), with PKCE, dynamic client registration, resource indicators (RFC 8707:
// access tokens are RS256 JWTs whose aud is the requested resource), client credentials and
// token exchange (RFC 8693, at the end).
// The login and consent steps complete by themselves for account "alice", granting the scopes
// asked for, so an SDK's OAuthClientProvider can follow the redirects programmatically.
//
// argv[2] is JSON: { port (0: any), cert, key, kids: [signing kid first, ...] }.
// Prints one line {"issuer": ..., "port": ...} once it listens.
import fs from "node:fs";
import https from "node:https";
import crypto from "node:crypto";
import Provider, { errors } from "oidc-provider";

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
      // The proxy as a token exchange client: its own tokens for discovery (client
      // credentials) and the client's tokens exchanged for an upstream (RFC 8693).
      minter("exchanger", { grant_types: ["client_credentials", TOKEN_EXCHANGE] }),
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
  provider.registerGrantType(TOKEN_EXCHANGE, exchange(provider, issuer, options.kids),
    ["subject_token", "subject_token_type", "resource", "audience", "scope", "requested_token_type"]);
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

const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

// RFC 8693 token exchange: the subject_token must be an access token this server issued (RS256,
// signed by one of its own keys, iss = this issuer, not expired); the answer is a new access
// token for the requested resource, with the subject's sub and an act claim naming the client
// that asked (the proxy). The exchanging client is authenticated by oidc-provider beforehand.
function exchange(provider, issuer, kids) {
  return async (ctx) => {
    const { params, client } = ctx.oidc;
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest("subject_token_type must be an access token");
    }
    const resource = params.resource || params.audience;
    if (!resource) throw new errors.InvalidTarget("resource (the upstream's URL) is required");
    const parts = String(params.subject_token || "").split(".");
    if (parts.length !== 3) throw new errors.InvalidGrant("subject_token is not a JWT");
    let header, claims;
    try {
      header = JSON.parse(Buffer.from(parts[0], "base64url"));
      claims = JSON.parse(Buffer.from(parts[1], "base64url"));
    } catch {
      throw new errors.InvalidGrant("subject_token is not a JWT");
    }
    if (header.alg !== "RS256" || !kids.includes(header.kid)) {
      throw new errors.InvalidGrant("subject_token is not signed by this server");
    }
    const key = crypto.createPublicKey({ key: signingKey(header.kid), format: "jwk" });
    const signed = crypto.verify("RSA-SHA256", Buffer.from(`${parts[0]}.${parts[1]}`), key,
      Buffer.from(parts[2], "base64url"));
    const now = Math.floor(Date.now() / 1000);
    if (!signed || claims.iss !== issuer || !(claims.exp > now) || !claims.sub) {
      throw new errors.InvalidGrant("subject_token is invalid or expired");
    }
    const lifetime = Math.min(600, claims.exp - now);
    const kid = kids[0];
    const body = {
      iss: issuer, sub: claims.sub, aud: resource, client_id: client.clientId,
      scope: params.scope || "mcp:tools", iat: now, exp: now + lifetime,
      jti: crypto.randomUUID(), act: { sub: client.clientId },
    };
    const input = `${b64url({ alg: "RS256", kid, typ: "at+jwt" })}.${b64url(body)}`;
    const signer = crypto.createPrivateKey({ key: signingKey(kid), format: "jwk" });
    const signature = crypto.sign("RSA-SHA256", Buffer.from(input), signer).toString("base64url");
    ctx.body = {
      access_token: `${input}.${signature}`,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: "Bearer",
      expires_in: lifetime,
    };
  };
}
