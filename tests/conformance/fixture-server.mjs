#!/usr/bin/env node
// The project's conformance fixture: an MCP server over Streamable HTTP that provides every tool,
// prompt and resource the server scenarios of @modelcontextprotocol/conformance (0.1.x) call for
// (`npx conformance list`; expectations in the suite's src/scenarios/server/*.ts).
//
// Written against the official TypeScript SDK (@modelcontextprotocol/sdk, pinned in
// tests/package-lock.json) with its low-level `Server` and the Node `StreamableHTTPServerTransport`,
// on a bare `node:http` server, so it needs nothing but the SDK. Plain ESM, runs on Node 20 and 22.
//
// Usage: node fixture-server.mjs [--port N] [--host 127.0.0.1] [--eras both|stateful]
//        (or PORT / HOST in the environment)
// Endpoint: http://HOST:PORT/mcp. Prints `fixture ready: http://HOST:PORT/mcp` on stdout once listening
// (port 0 picks a free port). Stateful: one Server + transport per session (Mcp-Session-Id).
// With `--eras both` (the default, as the suite's reference server) it also speaks 2026-07-28:
// see fixture-stateless.mjs.
//
// Behaviour worth knowing when it sits behind the proxy:
// - server-to-client requests (sampling, elicitation) and the notifications a tool emits (progress,
//   logging) are sent *related to the tool call*, i.e. on that POST's SSE stream;
// - `test_reconnection` closes its POST stream before answering (SEP-1699), with a 5 s retry hint
//   as the suite's reference server; the answer is then replayed from the event store when the
//   client resumes with GET + Last-Event-ID, and only if it did so before the answer was ready
//   (within the tool's 100 ms), as the reference server (SDK 1.29) keeps an answer only for a
//   stream connected when it is sent;
// - a subscription to test://watched-resource gets one `notifications/resources/updated` on the
//   session's GET stream shortly afterwards;
// - requests whose Host or Origin is not localhost / 127.0.0.1 / [::1] get 403 (DNS rebinding).

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isStateless, serveStateless } from './fixture-stateless.mjs';
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  ElicitResultSchema,
  CreateMessageResultSchema,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ErrorCode,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema
} from '@modelcontextprotocol/sdk/types.js';

// ------------------------------------------------------------------------------------------------
// Content

// 1x1 red PNG pixel, and a minimal WAV file.
const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV_BASE64 = 'UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=';

const EMPTY_OBJECT_SCHEMA = { type: 'object', properties: {} };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (t) => ({ type: 'text', text: t });

// SEP-1613: a raw JSON Schema 2020-12 input schema that must reach the client unchanged.
const JSON_SCHEMA_2020_12 = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  $defs: {
    address: {
      type: 'object',
      properties: { street: { type: 'string' }, city: { type: 'string' } }
    }
  },
  properties: {
    name: { type: 'string' },
    address: { $ref: '#/$defs/address' }
  },
  additionalProperties: false
};

// SEP-1034: elicitation with a default for every primitive type.
const SEP1034_SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', description: 'User name', default: 'John Doe' },
    age: { type: 'integer', description: 'User age', default: 30 },
    score: { type: 'number', description: 'User score', default: 95.5 },
    status: {
      type: 'string',
      description: 'User status',
      enum: ['active', 'inactive', 'pending'],
      default: 'active'
    },
    verified: { type: 'boolean', description: 'Verification status', default: true }
  },
  required: []
};

// SEP-1330: the five enum variants.
const SEP1330_SCHEMA = {
  type: 'object',
  properties: {
    untitledSingle: {
      type: 'string',
      description: 'Select one option',
      enum: ['option1', 'option2', 'option3']
    },
    titledSingle: {
      type: 'string',
      description: 'Select one option with titles',
      oneOf: [
        { const: 'value1', title: 'First Option' },
        { const: 'value2', title: 'Second Option' },
        { const: 'value3', title: 'Third Option' }
      ]
    },
    legacyEnum: {
      type: 'string',
      description: 'Select one option (legacy)',
      enum: ['opt1', 'opt2', 'opt3'],
      enumNames: ['Option One', 'Option Two', 'Option Three']
    },
    untitledMulti: {
      type: 'array',
      description: 'Select multiple options',
      minItems: 1,
      maxItems: 3,
      items: { type: 'string', enum: ['option1', 'option2', 'option3'] }
    },
    titledMulti: {
      type: 'array',
      description: 'Select multiple options with titles',
      minItems: 1,
      maxItems: 3,
      items: {
        anyOf: [
          { const: 'value1', title: 'First Choice' },
          { const: 'value2', title: 'Second Choice' },
          { const: 'value3', title: 'Third Choice' }
        ]
      }
    }
  },
  required: []
};

// Each tool: its listing, and `run(args, extra, ctx)` returning a CallToolResult.
const TOOLS = [
  {
    name: 'test_simple_text',
    description: 'Tests simple text content response',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [text('This is a simple text response for testing.')] })
  },
  {
    name: 'test_image_content',
    description: 'Tests image content response',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [{ type: 'image', data: PNG_BASE64, mimeType: 'image/png' }] })
  },
  {
    name: 'test_audio_content',
    description: 'Tests audio content response',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({ content: [{ type: 'audio', data: WAV_BASE64, mimeType: 'audio/wav' }] })
  },
  {
    name: 'test_embedded_resource',
    description: 'Tests embedded resource content response',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: 'This is an embedded resource content.'
          }
        }
      ]
    })
  },
  {
    name: 'test_multiple_content_types',
    description: 'Tests response with multiple content types (text, image, resource)',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      content: [
        text('Multiple content types test:'),
        { type: 'image', data: PNG_BASE64, mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: JSON.stringify({ test: 'data', value: 123 })
          }
        }
      ]
    })
  },
  {
    name: 'test_tool_with_logging',
    description: 'Tests tool that emits log messages during execution',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra) => {
      const steps = ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
      for (let i = 0; i < steps.length; i++) {
        if (i > 0) await sleep(50);
        await extra.sendNotification({
          method: 'notifications/message',
          params: { level: 'info', logger: 'conformance-fixture', data: steps[i] }
        });
      }
      return { content: [text('Tool with logging executed successfully')] };
    }
  },
  {
    name: 'test_tool_with_progress',
    description: 'Tests tool that reports progress notifications',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra) => {
      const token = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progress > 0) await sleep(50);
        if (token !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: {
              progressToken: token,
              progress,
              total: 100,
              message: `Completed step ${progress} of 100`
            }
          });
        }
      }
      return { content: [text(`Progress reported with token ${JSON.stringify(token ?? null)}`)] };
    }
  },
  {
    name: 'test_error_handling',
    description: 'Tests error response handling',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async () => ({
      isError: true,
      content: [text('This tool intentionally returns an error for testing')]
    })
  },
  {
    name: 'test_reconnection',
    description:
      'Tests SSE stream disconnection and client reconnection (SEP-1699): closes the POST stream ' +
      'mid-call and sends the result after the client reconnects.',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra) => {
      const session = sessions.get(extra.sessionId);
      const closedAt = Date.now();
      if (extra.closeSSEStream) extra.closeSSEStream();
      await sleep(100);
      // The reference server's transport drops an answer that finds no stream of its request
      // connected; this SDK stores it for any later resumption. A client (or a proxy) that
      // resumes only after the retry hint gets no answer from the reference server: here
      // neither.
      if (extra.closeSSEStream && session && !(session.resumedAt >= closedAt)) {
        await new Promise(() => {});
      }
      return {
        content: [
          text(
            'Reconnection test completed successfully. If you received this, the client properly ' +
              'reconnected after stream closure.'
          )
        ]
      };
    }
  },
  {
    name: 'test_sampling',
    description: 'Tests server-initiated sampling (LLM completion request)',
    inputSchema: {
      type: 'object',
      properties: { prompt: { type: 'string', description: 'The prompt to send to the LLM' } },
      required: ['prompt']
    },
    run: async (args, extra, ctx) => {
      if (!ctx.server.getClientCapabilities()?.sampling) {
        return { isError: true, content: [text('Client does not support sampling')] };
      }
      const result = await extra.sendRequest(
        {
          method: 'sampling/createMessage',
          params: {
            messages: [{ role: 'user', content: text(String(args.prompt ?? '')) }],
            maxTokens: 100
          }
        },
        CreateMessageResultSchema
      );
      const reply = result.content?.type === 'text' ? result.content.text : JSON.stringify(result.content);
      return { content: [text(`LLM response: ${reply}`)] };
    }
  },
  {
    name: 'test_elicitation',
    description: 'Tests server-initiated elicitation (user input request)',
    inputSchema: {
      type: 'object',
      properties: { message: { type: 'string', description: 'The message to show the user' } },
      required: ['message']
    },
    run: async (args, extra, ctx) =>
      elicit(ctx, extra, String(args.message ?? ''), {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" }
        },
        required: ['username', 'email']
      }, 'User response')
  },
  {
    name: 'test_elicitation_sep1034_defaults',
    description: 'Tests elicitation with default values per SEP-1034',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra, ctx) =>
      elicit(ctx, extra, 'Please review and update the form fields with defaults', SEP1034_SCHEMA,
        'Elicitation completed')
  },
  {
    name: 'test_elicitation_sep1330_enums',
    description: 'Tests elicitation with enum schema improvements per SEP-1330',
    inputSchema: EMPTY_OBJECT_SCHEMA,
    run: async (_args, extra, ctx) =>
      elicit(ctx, extra, 'Please select options from the enum fields', SEP1330_SCHEMA,
        'Elicitation completed')
  },
  {
    name: 'json_schema_2020_12_tool',
    description: 'Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)',
    inputSchema: JSON_SCHEMA_2020_12,
    run: async (args) => ({
      content: [text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args ?? {})}`)]
    })
  }
];

async function elicit(ctx, extra, message, requestedSchema, label) {
  if (!ctx.server.getClientCapabilities()?.elicitation) {
    return { isError: true, content: [text('Client does not support elicitation')] };
  }
  const result = await extra.sendRequest(
    { method: 'elicitation/create', params: { message, requestedSchema } },
    ElicitResultSchema
  );
  return {
    content: [text(`${label}: action=${result.action}, content=${JSON.stringify(result.content ?? {})}`)]
  };
}

const RESOURCES = [
  {
    uri: 'test://static-text',
    name: 'static-text',
    title: 'Static Text Resource',
    description: 'A static text resource for testing',
    mimeType: 'text/plain',
    read: (uri) => ({ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' })
  },
  {
    uri: 'test://static-binary',
    name: 'static-binary',
    title: 'Static Binary Resource',
    description: 'A static binary resource (image) for testing',
    mimeType: 'image/png',
    read: (uri) => ({ uri, mimeType: 'image/png', blob: PNG_BASE64 })
  },
  {
    uri: 'test://watched-resource',
    name: 'watched-resource',
    title: 'Watched Resource',
    description: 'A resource clients can subscribe to',
    mimeType: 'text/plain',
    read: (uri) => ({ uri, mimeType: 'text/plain', text: 'Watched resource content' })
  }
];

const TEMPLATE = {
  uriTemplate: 'test://template/{id}/data',
  name: 'template',
  title: 'Resource Template',
  description: 'A resource template with parameter substitution',
  mimeType: 'application/json'
};
const TEMPLATE_RE = /^test:\/\/template\/([^/]+)\/data$/;

const PROMPTS = [
  {
    name: 'test_simple_prompt',
    title: 'Simple Test Prompt',
    description: 'A simple prompt without arguments',
    arguments: [],
    get: () => [{ role: 'user', content: text('This is a simple prompt for testing.') }]
  },
  {
    name: 'test_prompt_with_arguments',
    title: 'Prompt With Arguments',
    description: 'A prompt with required arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true }
    ],
    get: (a) => [
      { role: 'user', content: text(`Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'`) }
    ]
  },
  {
    name: 'test_prompt_with_embedded_resource',
    title: 'Prompt With Embedded Resource',
    description: 'A prompt that includes an embedded resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
    get: (a) => [
      {
        role: 'user',
        content: {
          type: 'resource',
          resource: { uri: a.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' }
        }
      },
      { role: 'user', content: text('Please process the embedded resource above.') }
    ]
  },
  {
    name: 'test_prompt_with_image',
    title: 'Prompt With Image',
    description: 'A prompt that includes image content',
    arguments: [],
    get: () => [
      { role: 'user', content: { type: 'image', data: PNG_BASE64, mimeType: 'image/png' } },
      { role: 'user', content: text('Please analyze the image above.') }
    ]
  }
];

// Completion candidates per prompt argument / template variable.
const COMPLETIONS = {
  'ref/prompt:test_prompt_with_arguments:arg1': ['paris', 'park', 'party'],
  'ref/prompt:test_prompt_with_arguments:arg2': ['alpha', 'beta', 'gamma'],
  'ref/prompt:test_prompt_with_embedded_resource:resourceUri': RESOURCES.map((r) => r.uri),
  'ref/resource:test://template/{id}/data:id': ['1', '2', '123']
};

// ------------------------------------------------------------------------------------------------
// One MCP server per session

function createServer() {
  const server = new Server(
    { name: 'mcp-proxy-conformance-fixture', version: '1.0.0' },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {}
      },
      instructions: 'Conformance fixture of mcp-proxy: test_* tools, prompts and test:// resources.'
    }
  );
  const ctx = { server, subscriptions: new Set(), logLevel: 'info' };

  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: TOOLS.map(({ name, description, inputSchema }) => ({ name, description, inputSchema }))
  }));

  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const tool = TOOLS.find((t) => t.name === request.params.name);
    if (!tool) {
      throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    }
    try {
      return await tool.run(request.params.arguments ?? {}, extra, ctx);
    } catch (error) {
      return { isError: true, content: [text(`${tool.name} failed: ${error?.message ?? error}`)] };
    }
  });

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({
    resources: RESOURCES.map(({ read: _read, ...listing }) => listing)
  }));

  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: [TEMPLATE]
  }));

  server.setRequestHandler(ReadResourceRequestSchema, async (request) => {
    const uri = request.params.uri;
    const fixed = RESOURCES.find((r) => r.uri === uri);
    if (fixed) return { contents: [fixed.read(uri)] };
    const m = TEMPLATE_RE.exec(uri);
    if (m) {
      const id = decodeURIComponent(m[1]);
      return {
        contents: [
          {
            uri,
            mimeType: 'application/json',
            text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` })
          }
        ]
      };
    }
    throw new McpError(-32002, `Resource not found: ${uri}`, { uri });
  });

  server.setRequestHandler(SubscribeRequestSchema, async (request) => {
    const uri = request.params.uri;
    ctx.subscriptions.add(uri);
    // One update a little later, on the session's GET stream (dropped if there is none).
    setTimeout(() => {
      if (ctx.subscriptions.has(uri)) server.sendResourceUpdated({ uri }).catch(() => {});
    }, 200);
    return {};
  });

  server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    ctx.subscriptions.delete(request.params.uri);
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({
    prompts: PROMPTS.map(({ get: _get, ...listing }) => listing)
  }));

  server.setRequestHandler(GetPromptRequestSchema, async (request) => {
    const prompt = PROMPTS.find((p) => p.name === request.params.name);
    if (!prompt) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${request.params.name}`);
    const args = request.params.arguments ?? {};
    for (const a of prompt.arguments) {
      if (a.required && args[a.name] === undefined) {
        throw new McpError(ErrorCode.InvalidParams, `Missing required argument: ${a.name}`);
      }
    }
    return { description: prompt.description, messages: prompt.get(args) };
  });

  server.setRequestHandler(CompleteRequestSchema, async (request) => {
    const { ref, argument } = request.params;
    const key = `${ref.type}:${ref.type === 'ref/prompt' ? ref.name : ref.uri}:${argument.name}`;
    const prefix = String(argument.value ?? '');
    const values = (COMPLETIONS[key] ?? []).filter((v) => v.startsWith(prefix));
    return { completion: { values, total: values.length, hasMore: false } };
  });

  server.setRequestHandler(SetLevelRequestSchema, async (request, extra) => {
    ctx.logLevel = request.params.level;
    await extra.sendNotification({
      method: 'notifications/message',
      params: { level: 'info', logger: 'conformance-fixture', data: `Log level set to: ${ctx.logLevel}` }
    });
    return {};
  });

  return server;
}

// ------------------------------------------------------------------------------------------------
// Event store (SEP-1699 resumability): ids are `<streamId>::<sequence>`.

function createEventStore() {
  const events = [];
  let seq = 0;
  return {
    async storeEvent(streamId, message) {
      seq += 1;
      const eventId = `${streamId}::${String(seq).padStart(12, '0')}`;
      events.push({ eventId, streamId, message });
      if (events.length > 10000) events.shift();
      return eventId;
    },
    async getStreamIdForEventId(eventId) {
      return eventId.split('::')[0];
    },
    async replayEventsAfter(lastEventId, { send }) {
      const streamId = lastEventId.split('::')[0];
      for (const e of events) {
        if (e.streamId === streamId && e.eventId > lastEventId && Object.keys(e.message).length > 0) {
          await send(e.eventId, e.message);
        }
      }
      return streamId;
    }
  };
}

// ------------------------------------------------------------------------------------------------
// HTTP

const LOCAL_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

function hostnameOf(hostHeader) {
  if (!hostHeader) return null;
  try {
    return new URL(`http://${hostHeader}`).hostname.toLowerCase();
  } catch {
    return null;
  }
}

function isLocalRequest(req) {
  const host = hostnameOf(req.headers.host);
  if (!host || !LOCAL_HOSTS.has(host)) return false;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    try {
      if (!LOCAL_HOSTS.has(new URL(origin).hostname.toLowerCase())) return false;
    } catch {
      return false;
    }
  }
  return true;
}

function sendJsonError(res, status, code, message, id = null) {
  if (res.headersSent) return;
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id }));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

const sessions = new Map(); // session id -> { transport, server, version (asked for at initialize) }

// Workaround for a bug of @modelcontextprotocol/conformance 0.1.x (fixed upstream in #366/#416):
// server-sse-polling negotiates 2025-11-25 and then POSTs its raw `test_reconnection` call with
// `MCP-Protocol-Version: 2025-03-26`. The SDK transport gates SEP-1699 (priming event, retry,
// closing the stream mid-call) on that header being >= 2025-11-25, so the scenario would test
// nothing. Only that exact combination is rewritten: a session that negotiated 2025-11-25 or later,
// and a request claiming 2025-03-26. The Node transport reads `rawHeaders`.
function upgradeStaleProtocolHeader(req, negotiated) {
  if (!(negotiated >= '2025-11-25')) return;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].toLowerCase() === 'mcp-protocol-version' && raw[i + 1] === '2025-03-26') {
      raw[i + 1] = '2025-11-25';
      req.headers['mcp-protocol-version'] = '2025-11-25';
    }
  }
}

function isInitialize(body) {
  return body && !Array.isArray(body) && body.method === 'initialize';
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/mcp') {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found');
    return;
  }
  if (!isLocalRequest(req)) {
    sendJsonError(res, 403, -32000, 'Forbidden: Host/Origin is not localhost (DNS rebinding protection)');
    return;
  }
  const sid = req.headers['mcp-session-id'];

  if (req.method === 'POST') {
    let body;
    try {
      body = JSON.parse(await readBody(req));
      if (LOG) req.rpcSummary = JSON.stringify(Array.isArray(body) ? body.map((m) => [m.method, m.id]) : [body.method, body.id]);
    } catch {
      sendJsonError(res, 400, ErrorCode.ParseError, 'Parse error');
      return;
    }
    if (ERAS === 'both' && isStateless(req, body)) {
      await serveStateless(req, res, body, createServer);
      return;
    }
    if (sid) {
      const s = sessions.get(sid);
      if (!s) {
        sendJsonError(res, 404, -32001, 'Session not found');
        return;
      }
      upgradeStaleProtocolHeader(req, s.version);
      await s.transport.handleRequest(req, res, body);
      return;
    }
    if (!isInitialize(body)) {
      sendJsonError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
      return;
    }
    const server = createServer();
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: createEventStore(),
      retryInterval: 5000,
      onsessioninitialized: (id) => {
        sessions.set(id, { transport, server, version: String(body.params?.protocolVersion ?? '') });
      },
      onsessionclosed: (id) => {
        sessions.delete(id);
      }
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
    return;
  }

  if (req.method === 'GET' || req.method === 'DELETE') {
    if (!sid) {
      sendJsonError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
      return;
    }
    const s = sessions.get(sid);
    if (!s) {
      sendJsonError(res, 404, -32001, 'Session not found');
      return;
    }
    if (req.method === 'GET' && req.headers['last-event-id']) s.resumedAt = Date.now();
    await s.transport.handleRequest(req, res);
    return;
  }

  res.writeHead(405, { Allow: 'GET, POST, DELETE' });
  res.end();
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port') out.port = argv[++i];
    else if (argv[i] === '--host') out.host = argv[++i];
    else if (argv[i] === '--eras') out.eras = argv[++i];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const port = Number(args.port ?? process.env.PORT ?? 3000);
const host = args.host ?? process.env.HOST ?? '127.0.0.1';
// `both` (the default, as the suite's reference server): the 2026-07-28 era beside the stateful
// one (fixture-stateless.mjs); `stateful`: the stateful era only.
const ERAS = args.eras ?? 'both';
if (!['both', 'stateful'].includes(ERAS)) throw new Error(`--eras takes both or stateful, not ${ERAS}`);

// FIXTURE_LOG=1: one stderr line per HTTP request (method, MCP headers, body method/id, status).
const LOG = process.env.FIXTURE_LOG === '1';

const httpServer = http.createServer((req, res) => {
  if (LOG) {
    const h = req.headers;
    const started = Date.now();
    res.on('close', () => {
      console.error(
        `fixture: ${req.method} ${req.url} session=${h['mcp-session-id'] ?? '-'} ` +
          `version=${h['mcp-protocol-version'] ?? '-'} last-event-id=${h['last-event-id'] ?? '-'} ` +
          `accept=${JSON.stringify(h.accept ?? '')} rpc=${req.rpcSummary ?? '-'} -> ${res.statusCode} ` +
          `(${Date.now() - started} ms)`
      );
    });
  }
  handle(req, res).catch((error) => {
    console.error('fixture: error handling request:', error);
    sendJsonError(res, 500, ErrorCode.InternalError, 'Internal server error');
  });
});

httpServer.listen(port, host, () => {
  const { port: actual } = httpServer.address();
  process.stdout.write(`fixture ready: http://${host}:${actual}/mcp\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    httpServer.close();
    process.exit(0);
  });
}
