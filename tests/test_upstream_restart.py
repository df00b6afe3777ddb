"""An upstream restarts behind an open client session; the client does not notice.

server-everything forgets every session when it restarts (and answers an unknown session id with
400, not 404), so the proxy has to open a new upstream session on its own.
"""

from __future__ import annotations

import anyio

from harness import sdk_session, text_of


def test_session_survives_upstream_restart(spawner):
    alpha = spawner.everything()
    beta = spawner.everything()
    proxy = spawner.proxy([("alpha", alpha.url), ("beta", beta.url)], shards=2)

    async def go():
        async with sdk_session(proxy.url) as s:
            before = await s.call_tool("alpha__echo", {"message": "before restart"})

            await anyio.to_thread.run_sync(alpha.kill)
            restarted = await anyio.to_thread.run_sync(spawner.everything, alpha.port)

            after = await s.call_tool("alpha__echo", {"message": "after restart"})
            total = await s.call_tool("alpha__get-sum", {"a": 2, "b": 3})
            other = await s.call_tool("beta__echo", {"message": "beta untouched"})
            return before, after, total, other, restarted

    before, after, total, other, restarted = anyio.run(go)
    assert restarted.port == alpha.port and restarted.child.proc.pid != alpha.child.proc.pid
    assert text_of(before) == "Echo: before restart"
    assert not after.is_error and text_of(after) == "Echo: after restart"
    assert text_of(total) == "The sum of 2 and 3 is 5."
    assert text_of(other) == "Echo: beta untouched"
