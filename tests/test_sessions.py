"""Sessions over raw HTTP: one session used from many TCP connections, and DELETE ending it.

Every request here opens a new connection (`harness.raw_request`), so with --shards 2 the kernel
spreads them over both shards; a session created on one shard must answer on the other.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from harness import raw_call_tool, raw_initialize, raw_request, rpc, tool_text


def _echo(url: str, session: str, i: int) -> tuple[int, str]:
    server = "alpha" if i % 2 == 0 else "beta"
    r, answer = raw_call_tool(url, session, f"{server}__echo", {"message": f"msg-{i}"})
    if r.status != 200 or answer is None or "result" not in answer:
        return r.status, f"bad answer: {r.status} {r.body[:300]!r}"
    return r.status, tool_text(answer["result"])


def test_one_session_many_connections(proxy_ab):
    url = proxy_ab.url
    session = raw_initialize(url)
    outcomes: dict[int, tuple[int, str]] = {}
    # 16 one after the other, then 24 more from 8 threads at once.
    for i in range(16):
        outcomes[i] = _echo(url, session, i)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {i: pool.submit(_echo, url, session, i) for i in range(16, 40)}
        for i, f in futures.items():
            outcomes[i] = f.result(timeout=60)
    wrong = {i: o for i, o in outcomes.items() if o != (200, f"Echo: msg-{i}")}
    assert not wrong, f"{len(wrong)} of 40 requests failed or got another answer: {wrong}"


def test_session_ids_are_distinct_and_listing_works_on_each(proxy_ab):
    url = proxy_ab.url
    sessions = {raw_initialize(url) for _ in range(6)}
    assert len(sessions) == 6, "two initializes got the same Mcp-Session-Id"
    for sid in sessions:
        assert all(0x21 <= ord(ch) <= 0x7E for ch in sid), f"session id has non-visible ASCII: {sid!r}"
        req = rpc("tools/list")
        r = raw_request(url, body=req, session=sid)
        answer = r.response_for(req["id"])
        assert r.status == 200 and answer and "result" in answer, (r.status, r.body[:300])
        names = {t["name"] for t in answer["result"]["tools"]}
        assert {"alpha__echo", "beta__echo"} <= names


def test_delete_ends_the_session(proxy_ab):
    url = proxy_ab.url
    session = raw_initialize(url)
    keep = raw_initialize(url)
    r, answer = raw_call_tool(url, session, "alpha__echo", {"message": "before"})
    assert r.status == 200 and tool_text(answer["result"]) == "Echo: before"

    deleted = raw_request(url, method="DELETE", session=session)
    assert deleted.status in (200, 202, 204), deleted.status

    # Several fresh connections, so whichever shard they land on must know the session is gone.
    for _ in range(4):
        after = raw_request(url, body=rpc("tools/list"), session=session)
        assert after.status == 404, f"request after DELETE: HTTP {after.status} {after.body[:200]!r}"
    # Another session is not affected.
    r, answer = raw_call_tool(url, keep, "beta__echo", {"message": "other"})
    assert r.status == 200 and tool_text(answer["result"]) == "Echo: other"


def test_ping_is_answered(proxy_ab):
    url = proxy_ab.url
    session = raw_initialize(url)
    req = rpc("ping")
    r = raw_request(url, body=req, session=session)
    answer = r.response_for(req["id"])
    assert r.status == 200 and answer == {"jsonrpc": "2.0", "id": req["id"], "result": {}}, (r.status, r.body)
