-- wrk script: MCP `tools/call` of an echo tool over Streamable HTTP.
--
-- Environment:
--   SESSION_ID  value of the Mcp-Session-Id header (required; create the
--               session beforehand with initialize + notifications/initialized)
--   TOOL        tool name (default "echo"; through mcp-proxy "everything__echo")
--
-- Every request carries its own JSON-RPC id (SDK-based servers route answers
-- by id, so reusing one id on concurrent requests would mix answers up).
-- Ids are offset per wrk thread, so -t N > 1 stays unique as well.
--
-- done() prints one parseable line (bench/echo_report.lua):
--   ECHO_BENCH rps=... p50_us=... p90_us=... p99_us=... requests=... non200=... badbody=... ...
-- badbody counts 200 answers whose body lacks "Echo: hi" (e.g. JSON-RPC errors).

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
   local session = os.getenv("SESSION_ID")
   if session == nil or session == "" then
      error("SESSION_ID is not set")
   end
   local tool = os.getenv("TOOL") or "echo"
   id_base = (tid or 0) * 1000000000
   headers = {
      ["Content-Type"] = "application/json",
      ["Accept"] = "application/json, text/event-stream",
      ["Mcp-Session-Id"] = session,
      ["MCP-Protocol-Version"] = "2025-06-18",
   }
   body_fmt = '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"'
      .. tool .. '","arguments":{"message":"hi"}}}'
end

function request()
   counter = counter + 1
   return wrk.format("POST", wrk.path, headers, string.format(body_fmt, id_base + counter))
end

function response(status, hdrs, body)
   if status ~= 200 then
      non200 = non200 + 1
   elseif body == nil or not string.find(body, "Echo: hi", 1, true) then
      badbody = badbody + 1
   end
end

function done(summary, latency, requests)
   echo_report(threads, summary, latency)
end
