-- The report both echo wrk scripts print at the end (bench/echo.lua, bench/stateless_echo.lua),
-- loaded by them with dofile from beside themselves, so the line the bench scripts parse has
-- one definition.
--
-- echo_report(threads, summary, latency) prints one parseable line:
--   ECHO_BENCH rps=... p50_us=... p90_us=... p99_us=... requests=... non200=... badbody=... ...
-- summing each wrk thread's `non200` and `badbody` counters (threads as setup() collected them).

function echo_report(threads, summary, latency)
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
