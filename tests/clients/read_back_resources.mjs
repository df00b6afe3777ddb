// The TypeScript SDK's client against one MCP endpoint: collects every resource URI a tool
// result or prompt hands out (resource_link blocks, embedded resources, resources/read
// contents) and reads each one back through the same endpoint.
//
// Usage: node read_back_resources.mjs URL PREFIX
//   PREFIX is the server's tool/prompt prefix through the proxy ("" directly).
// Prints one JSON object: {uris: [...], reads: {uri: "ok" | "error: ..."}}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, prefix] = process.argv.slice(2);
const name = (n) => (prefix ? `${prefix}__${n}` : n);
const client = new Client({ name: "read-back", version: "1" }, { capabilities: {} });
await client.connect(new StreamableHTTPClientTransport(new URL(url)));

const uris = [];
const collect = (block) => {
  if (block?.type === "resource_link") uris.push(block.uri);
  if (block?.type === "resource") uris.push(block.resource.uri);
};
const links = await client.callTool({ name: name("get-resource-links"), arguments: { count: 4 } });
links.content.forEach(collect);
for (const resourceType of ["Text", "Blob"]) {
  const ref = await client.callTool({
    name: name("get-resource-reference"),
    arguments: { resourceType, resourceId: 3 },
  });
  ref.content.forEach(collect);
}
const prompt = await client.getPrompt({
  name: name("resource-prompt"),
  arguments: { resourceType: "Text", resourceId: "2" },
});
for (const m of prompt.messages) (Array.isArray(m.content) ? m.content : [m.content]).forEach(collect);

const reads = {};
for (const uri of uris) {
  try {
    const read = await client.readResource({ uri });
    const back = read.contents.map((c) => c.uri);
    reads[uri] = back.every((u) => u === uri) ? "ok" : `contents name ${JSON.stringify(back)}`;
  } catch (e) {
    reads[uri] = `error: ${e.message}`;
  }
}
console.log(JSON.stringify({ uris, reads }));
await client.close();
