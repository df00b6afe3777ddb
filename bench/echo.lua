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
-- done() prints one parseable line:
--   ECHO_BENCH rps=... p50_us=... p90_us=... p99_us=... requests=... non200=... badbody=... ...
-- badbody counts 200 answers whose body lacks "Echo: hi" (e.g. JSON-RPC errors).

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

local counter = 0
local id_base = 0
local non200 = 0
local badbody = 0
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
   local n200, bad = 0, 0
   for _, t in ipairs(threads) do
      n200 = n200 + (t:get("non200") or 0)
      bad = bad + (t:get("badbody") or 0)
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "ECHO_BENCH rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d requests=%d duration_s=%.2f"
         .. " non200=%d badbody=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
      summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      summary.requests, secs, n200, bad,
      e.connect, e.read, e.write, e.timeout, e.status))
end
