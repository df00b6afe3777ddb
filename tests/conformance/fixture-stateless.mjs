// The 2026-07-28 (stateless) side of the conformance fixture: the same tools, prompts and
// resources as the stateful side, served per request without a session, the way the suite's
// reference server does it (modelcontextprotocol/conformance,
// examples/servers/typescript/everything-server.ts): a request that names a protocol version
// (header or `_meta`) without a session is checked against the era's rules and dispatched to a
// fresh in-memory server; anything else goes to the session machinery of fixture-server.mjs.
//
// What it shares with the reference server (so the proxy meets here what it meets there):
// - `server/discover` with `supportedVersions: ["2026-07-28"]` and the server's identity in
//   `_meta["io.modelcontextprotocol/serverInfo"]`, which every result carries too;
// - a dispatch client that declares sampling and elicitation but answers neither, so
//   `test_sampling` / `test_elicitation` report "Method not found" in the era (the reference
//   server has no multi-round-trip versions of them either), and `resources/subscribe` is a
//   removed method: 404, -32601;
// - the era's refusals: missing `MCP-Protocol-Version` header or a header disagreeing with
//   `_meta` -32020, missing `_meta` fields -32602, another version -32022, all HTTP 400; removed
//   and unknown methods 404 with -32601; -32002 "resource not found" answered as -32602 with
//   the uri in `data` (SEP-2164);
// - results with `resultType: "complete"`, lists and reads with `ttlMs` / `cacheScope`.
// The reference server's diagnostic tools of server-stateless (test_missing_capability,
// test_streaming_elicitation, test_logging_tool, test_trigger_tool_change / _prompt_change) are
// listed and served in this era only, as there.
// Where it does more: `Mcp-Method` / `Mcp-Name` are checked against the body (400, -32020), log
// messages go only to requests that opted in with `_meta` logLevel (at or above it), and
// notifications a call emits are streamed as SSE before its result; `subscriptions/listen` is
// an SSE stream (the reference server writes JSON lines under application/json).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import {
  LoggingMessageNotificationSchema,
  ProgressNotificationSchema,
  ResultSchema
} from '@modelcontextprotocol/sdk/types.js';

export const VERSION = '2026-07-28';
const META_VERSION = 'io.modelcontextprotocol/protocolVersion';
const META_CAPABILITIES = 'io.modelcontextprotocol/clientCapabilities';
const META_LOG_LEVEL = 'io.modelcontextprotocol/logLevel';
const META_SERVER_INFO = 'io.modelcontextprotocol/serverInfo';
const META_SUBSCRIPTION = 'io.modelcontextprotocol/subscriptionId';
const SERVER_INFO = { name: 'mcp-proxy-conformance-fixture', version: '1.0.0' };
const LEGACY_VERSIONS = ['2024-11-05', '2025-03-26', '2025-06-18', '2025-11-25'];
const REMOVED = ['initialize', 'ping', 'logging/setLevel', 'resources/subscribe', 'resources/unsubscribe'];
const DISPATCHED = [
  'tools/list',
  'tools/call',
  'prompts/list',
  'prompts/get',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'completion/complete'
];
const CACHEABLE = ['tools/list', 'prompts/list', 'resources/list', 'resources/templates/list', 'resources/read'];
const NAMED = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' };
const LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];

/** True when a POST without a session belongs to the stateless era (the reference server's rule:
 * it names a version in the header or carries `_meta`, and is not plain legacy traffic). */
export function isStateless(req, body) {
  if (req.headers['mcp-session-id'] || !body || Array.isArray(body)) return false;
  const header = req.headers['mcp-protocol-version'];
  const meta = body.params?._meta;
  const legacy = meta === undefined && header !== undefined && LEGACY_VERSIONS.includes(header);
  return (header !== undefined || meta !== undefined) && !legacy;
}

function send(res, status, payload) {
  if (res.headersSent) return;
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', ...payload }));
}

const refuse = (res, status, id, code, message, data) =>
  send(res, status, { id, error: data === undefined ? { code, message } : { code, message, data } });

/** Checks the era's rules; returns true when the request was refused (answer written). */
function refused(req, res, body) {
  const id = body.id ?? null;
  const header = req.headers['mcp-protocol-version'];
  const meta = body.params?._meta;
  if (!header) return refuse(res, 400, id, -32020, 'Missing MCP-Protocol-Version header'), true;
  if (!meta || !meta[META_VERSION] || !meta[META_CAPABILITIES]) {
    refuse(res, 400, id, -32602, 'Invalid params: _meta needs protocolVersion and clientCapabilities');
    return true;
  }
  if (header !== meta[META_VERSION]) {
    return refuse(res, 400, id, -32020, 'MCP-Protocol-Version header disagrees with _meta'), true;
  }
  if (meta[META_VERSION] !== VERSION) {
    refuse(res, 400, id, -32022, 'Unsupported protocol version', {
      supported: [VERSION],
      requested: String(meta[META_VERSION])
    });
    return true;
  }
  const method = req.headers['mcp-method'];
  if (method !== body.method) {
    return refuse(res, 400, id, -32020, `Mcp-Method ${method ?? '(missing)'} disagrees with ${body.method}`), true;
  }
  const field = NAMED[body.method];
  if (field) {
    const name = decodeHeader(req.headers['mcp-name']);
    if (name !== body.params?.[field]) {
      return refuse(res, 400, id, -32020, `Mcp-Name ${name ?? '(missing)'} disagrees with ${field}`), true;
    }
  }
  return false;
}

function decodeHeader(value) {
  const m = /^=\?base64\?(.*)\?=$/.exec(value ?? '');
  return m ? Buffer.from(m[1], 'base64').toString('utf8') : value;
}

function dress(method, result) {
  result.resultType ??= 'complete';
  if (CACHEABLE.includes(method)) {
    result.ttlMs ??= 0;
    result.cacheScope ??= 'private';
  }
  result._meta = { ...(result._meta ?? {}), [META_SERVER_INFO]: SERVER_INFO };
  return result;
}

// Open subscriptions/listen streams; `notify(kind)` writes a list change to those that asked.
const listeners = new Set();

export function notifyListeners(kind) {
  const method = `notifications/${kind}/list_changed`;
  for (const l of listeners) {
    if (!l.wants[`${kind}ListChanged`]) continue;
    const message = { jsonrpc: '2.0', method, params: { _meta: { [META_SUBSCRIPTION]: l.id } } };
    l.res.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`);
  }
}

function listen(res, body) {
  const id = body.id ?? null;
  const asked = body.params?.notifications ?? {};
  const granted = {};
  for (const k of ['toolsListChanged', 'promptsListChanged', 'resourcesListChanged']) {
    if (asked[k] === true) granted[k] = true;
  }
  const subscription = String(id);
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  const ack = {
    jsonrpc: '2.0',
    method: 'notifications/subscriptions/acknowledged',
    params: { _meta: { [META_SUBSCRIPTION]: subscription }, notifications: granted }
  };
  res.write(`event: message\ndata: ${JSON.stringify(ack)}\n\n`);
  const entry = { res, id: subscription, wants: granted };
  listeners.add(entry);
  res.on('close', () => listeners.delete(entry));
}

async function dispatch(req, res, body, createServer) {
  const id = body.id ?? null;
  const params = body.params ?? {};
  const meta = params._meta;
  const level = LEVELS.indexOf(meta[META_LOG_LEVEL]);
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  const server = createServer();
  await server.connect(serverSide);
  const client = new Client(
    { name: 'stateless-dispatch', version: '1.0.0' },
    { capabilities: { sampling: {}, elicitation: {} } }
  );
  await client.connect(clientSide);
  const interim = [];
  client.setNotificationHandler(ProgressNotificationSchema, async (n) => {
    interim.push({ jsonrpc: '2.0', ...n });
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, async (n) => {
    if (level >= 0 && LEVELS.indexOf(n.params?.level) >= level) interim.push({ jsonrpc: '2.0', ...n });
  });
  const { _meta, ...rest } = params;
  const forwarded = _meta?.progressToken !== undefined ? { ...rest, _meta: { progressToken: _meta.progressToken } } : rest;
  let answer;
  try {
    const result = await client.request({ method: body.method, params: forwarded }, ResultSchema);
    if (body.method === 'tools/list') {
      result.tools = [...result.tools, ...DIAGNOSTIC_TOOLS, ...(dynamic.tools ? [DYNAMIC_TOOL] : [])];
    }
    if (body.method === 'prompts/list' && dynamic.prompts) result.prompts = [...result.prompts, DYNAMIC_PROMPT];
    answer = { id, result: dress(body.method, { ...result }) };
  } catch (e) {
    let code = typeof e.code === 'number' ? e.code : -32603;
    let data = e.data;
    if (code === -32002) {
      code = -32602;
      data = data ?? { uri: params.uri };
    }
    const message = String(e.message ?? e).replace(/^(MCP error -?\d+: )+/, '');
    answer = { id, error: data === undefined ? { code, message } : { code, message, data } };
  } finally {
    await client.close().catch(() => {});
    await server.close().catch(() => {});
  }
  const accept = String(req.headers.accept ?? '');
  if (interim.length > 0 && accept.includes('text/event-stream')) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    for (const m of [...interim, { jsonrpc: '2.0', ...answer }]) {
      res.write(`event: message\ndata: ${JSON.stringify(m)}\n\n`);
    }
    res.end();
    return;
  }
  send(res, answer.error?.code === -32601 ? 404 : 200, answer);
}

// The reference server's diagnostic tools of the server-stateless scenario, served by the era's
// side alone: each answers from the request itself.
const DIAGNOSTIC_TOOLS = [
  ['test_missing_capability', 'Needs the sampling capability: -32021 without it'],
  ['test_streaming_elicitation', 'Streams a progress notification, then its result'],
  ['test_logging_tool', 'Logs at info, to a request that opted in with logLevel'],
  ['test_trigger_tool_change', 'Announces a tools list change on the listen streams'],
  ['test_trigger_prompt_change', 'Announces a prompts list change on the listen streams']
].map(([name, description]) => ({ name, description, inputSchema: { type: 'object', properties: {} } }));

// Entries the trigger tools add and remove.
const dynamic = { tools: false, prompts: false };
const DYNAMIC_TOOL = { name: 'test_dynamic_tool', description: 'Comes and goes', inputSchema: { type: 'object', properties: {} } };
const DYNAMIC_PROMPT = { name: 'test_dynamic_prompt', description: 'Comes and goes' };

function streamed(res, messages) {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  for (const m of messages) res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', ...m })}\n\n`);
  res.end();
}

/** Answers a diagnostic tool call; false when the tool is not one. */
function diagnostic(res, body) {
  const id = body.id ?? null;
  const meta = body.params._meta;
  const done = (t) => ({ id, result: dress('tools/call', { content: [{ type: 'text', text: t }] }) });
  switch (body.params?.name) {
    case 'test_missing_capability':
      if (!meta[META_CAPABILITIES]?.sampling) {
        refuse(res, 400, id, -32021, 'Missing required client capability: sampling', {
          requiredCapabilities: { sampling: {} }
        });
      } else send(res, 200, done('sampling declared'));
      return true;
    case 'test_streaming_elicitation':
      streamed(res, [
        { method: 'notifications/progress', params: { progressToken: 'token-abc', progress: 50, total: 100 } },
        done('Streaming complete')
      ]);
      return true;
    case 'test_logging_tool': {
      const log = { method: 'notifications/message', params: { level: 'info', data: 'diagnostic log' } };
      const wanted = LEVELS.indexOf(meta[META_LOG_LEVEL]);
      streamed(res, wanted >= 0 && wanted <= 1 ? [log, done('logged')] : [done('logged')]);
      return true;
    }
    case 'test_trigger_tool_change':
    case 'test_trigger_prompt_change': {
      // The list really changes (a dynamic entry comes or goes), so a client that lists again
      // after the notification, as a proxy does, sees a change.
      const kind = body.params.name === 'test_trigger_tool_change' ? 'tools' : 'prompts';
      dynamic[kind] = !dynamic[kind];
      notifyListeners(kind);
      send(res, 200, done('changed'));
      return true;
    }
    default:
      return false;
  }
}

/** Serves one stateless-era POST (see `isStateless`). */
export async function serveStateless(req, res, body, createServer) {
  if (refused(req, res, body)) return;
  const id = body.id ?? null;
  if (body.method === 'server/discover') {
    const result = dress(body.method, {
      supportedVersions: [VERSION],
      capabilities: {
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { listChanged: true },
        completions: {}
      },
      ttlMs: 0,
      cacheScope: 'public'
    });
    return send(res, 200, { id, result });
  }
  if (body.method === 'subscriptions/listen') return listen(res, body);
  if (body.method === 'tools/call' && diagnostic(res, body)) return;
  if (DISPATCHED.includes(body.method)) return dispatch(req, res, body, createServer);
  if (REMOVED.includes(body.method)) {
    return refuse(res, 404, id, -32601, 'Method not found: removed stateful RPC');
  }
  return refuse(res, 404, id, -32601, 'Method not found');
}
