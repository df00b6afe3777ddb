-- wrk script: a 2026-07-28 (stateless era) `tools/call` of an echo tool, no session: the
-- client's capabilities and identity ride in `_meta` and `Mcp-Method`/`Mcp-Name` name the call.
-- Every request has the same client key, so through mcp-proxy they share one bridge session.
--
-- Environment:
--   TOOL  tool name (default "echo"; through mcp-proxy "<server>__echo")
--
-- done() prints one parseable line (bench/echo_report.lua):
--   ECHO_BENCH rps=... p50_us=... p90_us=... p99_us=... requests=... non200=... badbody=... ...
-- badbody counts 200 answers whose body lacks "hi" or carries a JSON-RPC error.

-- The shared report, found beside this script whatever the working directory.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "echo_report.lua")

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local counter = 0
local id_base = 0
-- Globals, not locals: the report reads them per thread with thread:get, which sees globals only.
non200 = 0
badbody = 0
local headers
local body_fmt

function init(args)
   local tool = os.getenv("TOOL") or "echo"
   id_base = (tid or 0) * 1000000000
   headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["MCP-Protocol-Version"] = "2026-07-28",
      ["Mcp-Method"] = "tools/call",
      ["Mcp-Name"] = tool,
   }
   body_fmt = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"'
      .. tool .. '","arguments":{"message":"hi"},"_meta":{'
      .. '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientCapabilities":{},'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}}}'
end

function request()
   counter = counter + 1
   return wrk.format("POST", wrk.path, headers, string.format(body_fmt, id_base + counter))
end

function response(status, hdrs, body)
   if status ~= 200 then
      non200 = non200 + 1
   elseif body == nil or not string.find(body, "hi", 1, true) or string.find(body, '"error"', 1, true) then
      badbody = badbody + 1
   end
end

function done(summary, latency, requests)
   echo_report(threads, summary, latency)
end
