"""What the proxy relays besides plain request/response: server notifications (resource updates,
log messages), completions, resumable SSE streams, and paging of the merged lists.

Most tests use the `proxy_ab` fixture (alpha and beta, server-everything, --shards 2). The SDK
tests drive `mcp.ClientSession`; the stream tests speak raw HTTP so they can read SSE event ids,
drop a connection mid-stream and resume it with Last-Event-ID.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import urllib.request
import warnings
from typing import Any

import anyio
import mcp_types as types

from harness import (
    ACCEPT_BOTH,
    PROTOCOL_VERSION,
    raw_call_tool,
    raw_initialize,
    raw_request,
    rpc,
    sdk_session,
    servers_toml,
    tool_text,
)

ARCH = "demo://resource/static/document/architecture.md"
ALPHA_ARCH = f"alpha+{ARCH}"
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"


def run(fn, *args):
    return anyio.run(fn, *args)


# ---------------------------------------------------------------------------------------------
# Incremental SSE over one HTTP connection


class SseStream:
    """One HTTP request whose text/event-stream answer is read event by event, as it arrives."""

    def __init__(self, url: str, method: str, headers: dict[str, str], body: dict | None = None,
                 timeout: float = 10.0) -> None:
        host_port, path = url.split("://", 1)[1].split("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        data = json.dumps(body).encode() if body is not None else None
        hdrs = dict(headers)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        self.conn.request(method, "/" + path, body=data, headers=hdrs)
        # Kept: http.client drops conn.sock when the response is to be read until close, and
        # the deadline of `next_event` sets this socket's timeout line by line.
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.content_type = self.resp.getheader("content-type", "")
        self.ended = False

    def next_event(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next event (`id`, `event`, `data`, and `message` if data is JSON), or None at the
        end of the stream. A silent server raises TimeoutError after the socket timeout. With a
        `deadline` (time.monotonic), TimeoutError once it passes, checked before every line:
        keep-alive comments do not keep a reader waiting past it."""
        current: dict[str, Any] = {}
        data_lines: list[str] = []
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("deadline passed before the next event")
                if self.sock is not None:
                    self.sock.settimeout(left)
            raw = self.resp.readline()
            if not raw:
                self.ended = True
                if current or data_lines:
                    break
                return None
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line == "":
                if current or data_lines:
                    break
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data_lines.append(value)
            elif name in ("id", "event", "retry"):
                current[name] = value
        current["data"] = "\n".join(data_lines)
        if current["data"].strip():
            try:
                current["message"] = json.loads(current["data"])
            except ValueError:
                pass
        return current

    def events_until(self, deadline: float):
        """Yield events until the stream ends (then `ended` is set) or `deadline`
        (time.monotonic) passes, whatever the server sends meanwhile (keep-alives included)."""
        while True:
            try:
                ev = self.next_event(deadline)
            except (TimeoutError, socket.timeout):
                return
            if ev is None:
                return
            yield ev

    def abort(self) -> None:
        """Drop the connection at once (RST), the way a crashed client or a dead network does."""
        sock = self.sock
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            self.conn.close()


def test_events_until_keeps_its_deadline_on_a_stream_of_keep_alives():
    """A stream that sends only keep-alive comments ends the wait at its deadline, not when the
    server gives up: otherwise a test waiting for an event that never comes hangs."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    gave_up = threading.Event()

    def keep_alive_forever() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            comment = b": keep-alive\n\n"
            # Far longer than the reader's deadline; the cap only keeps a broken reader finite.
            cap = time.monotonic() + 30
            while not stop.is_set():
                if time.monotonic() > cap:
                    gave_up.set()
                    break
                try:
                    conn.sendall(b"%x\r\n%s\r\n" % (len(comment), comment))
                except OSError:
                    return
                time.sleep(0.05)
            try:
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    server = threading.Thread(target=keep_alive_forever, daemon=True)
    server.start()
    stream = SseStream(f"http://127.0.0.1:{port}/mcp", "GET", {"Accept": "text/event-stream"})
    try:
        events = list(stream.events_until(time.monotonic() + 0.5))
        still_sending = not gave_up.is_set()
    finally:
        stop.set()
        stream.close()
        server.join(timeout=5)
        listener.close()
    assert events == [], events
    assert still_sending and not stream.ended, \
        "events_until waited for the server to end the stream instead of returning at its deadline"


def session_headers(sid: str, **extra: str) -> dict[str, str]:
    return {"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL_VERSION, **extra}


def split_event_id(event_id: str) -> tuple[str, int]:
    stream, sep, seq = event_id.rpartition("-")
    assert sep and stream and seq.isdigit(), f"event id is not {{stream}}-{{seq}}: {event_id!r}"
    return stream, int(seq)


def open_get_stream(url: str, sid: str, last_event_id: str | None = None, timeout: float = 10.0) -> SseStream:
    headers = session_headers(sid, Accept="text/event-stream")
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    s = SseStream(url, "GET", headers, timeout=timeout)
    if s.status != 200 or not s.content_type.startswith("text/event-stream"):
        body = s.resp.read(500)
        s.close()
        raise AssertionError(f"GET /mcp (Last-Event-ID {last_event_id!r}): HTTP {s.status} "
                             f"{s.content_type!r} {body!r}")
    return s


# ---------------------------------------------------------------------------------------------
# 1. Resource subscriptions


def test_resource_update_notification_carries_the_exposed_uri(proxy_ab):
    """Subscribing to alpha's resource by its proxied URI yields resources/updated for that URI."""
    received: list[Any] = []
    got_update = anyio.Event()

    async def on_message(message) -> None:
        received.append(message)
        if isinstance(message, types.ResourceUpdatedNotification):
            got_update.set()

    async def go():
        async with sdk_session(proxy_ab.url, message_handler=on_message) as s:
            listed = [str(r.uri) for r in (await s.list_resources()).resources]
            assert ALPHA_ARCH in listed, listed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # subscribe is deprecated for 2026-era servers only
                await s.subscribe_resource(ALPHA_ARCH)
            toggled = await s.call_tool("alpha__toggle-subscriber-updates", {})
            assert not toggled.is_error and "Started" in "".join(c.text for c in toggled.content), toggled
            with anyio.move_on_after(8):
                await got_update.wait()
            # Stop alpha's timer for this session.
            await s.call_tool("alpha__toggle-subscriber-updates", {})

    run(go)
    updates = [m for m in received if isinstance(m, types.ResourceUpdatedNotification)]
    assert updates, f"no notifications/resources/updated within 8 s; got: {received}"
    uris = {str(u.params.uri) for u in updates}
    assert uris == {ALPHA_ARCH}, f"resources/updated carried {uris}, expected only the exposed {ALPHA_ARCH!r}"


# ---------------------------------------------------------------------------------------------
# 2. Logging


def test_set_level_and_log_messages_are_relayed(proxy_ab):
    logs: list[types.LoggingMessageNotificationParams] = []
    got_log = anyio.Event()

    def simulated(params: types.LoggingMessageNotificationParams) -> bool:
        # server-everything's texts: "Debug-level message - SessionId ...", "Alert level-message ..."
        return "level message" in str(params.data) or "level-message" in str(params.data)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)
        if simulated(params):
            got_log.set()

    async def go():
        async with sdk_session(proxy_ab.url, logging_callback=on_log) as s:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # logging is deprecated for 2026-era servers only
                result = await s.set_logging_level("debug")
            assert isinstance(result, types.EmptyResult), result
            toggled = await s.call_tool("alpha__toggle-simulated-logging", {})
            assert not toggled.is_error, toggled
            with anyio.move_on_after(8):
                await got_log.wait()
            await s.call_tool("alpha__toggle-simulated-logging", {})

    run(go)
    relayed = [p for p in logs if simulated(p)]
    assert relayed, f"no simulated notifications/message within 8 s; logging_callback got: {logs}"
    levels = {"debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"}
    assert all(p.level in levels for p in relayed), relayed


# ---------------------------------------------------------------------------------------------
# 3. Completion


def test_completion_for_prompt_and_resource_template(proxy_ab):
    async def go():
        async with sdk_session(proxy_ab.url) as s:
            templates = [t.uri_template for t in (await s.list_resource_templates()).resource_templates]
            assert f"alpha+{TEXT_TEMPLATE}" in templates, templates
            prompt = types.PromptReference(type="ref/prompt", name="alpha__completable-prompt")
            dept = await s.complete(prompt, {"name": "department", "value": "Eng"})
            dept_s = await s.complete(prompt, {"name": "department", "value": "S"})
            names = await s.complete(prompt, {"name": "name", "value": ""}, context_arguments={"department": "Sales"})
            beta_names = await s.complete(
                types.PromptReference(type="ref/prompt", name="beta__completable-prompt"),
                {"name": "name", "value": "A"},
                context_arguments={"department": "Engineering"},
            )
            tmpl = types.ResourceTemplateReference(type="ref/resource", uri=f"alpha+{TEXT_TEMPLATE}")
            rid = await s.complete(tmpl, {"name": "resourceId", "value": "42"})
            bad_rid = await s.complete(tmpl, {"name": "resourceId", "value": "abc"})
            return dept, dept_s, names, beta_names, rid, bad_rid

    dept, dept_s, names, beta_names, rid, bad_rid = run(go)
    assert dept.completion.values == ["Engineering"], dept
    assert dept_s.completion.values == ["Sales", "Support"], dept_s
    assert names.completion.values == ["David", "Eve", "Frank"], names
    assert beta_names.completion.values == ["Alice"], beta_names
    assert rid.completion.values == ["42"], rid
    assert bad_rid.completion.values == [], bad_rid


# ---------------------------------------------------------------------------------------------
# 4. Resuming a dropped POST stream


def test_dropped_tool_call_stream_resumes_with_last_event_id(proxy_ab):
    url = proxy_ab.url
    sid = raw_initialize(url)
    request_id = "resume-me-77"
    call = rpc("tools/call", {
        "name": "beta__trigger-long-running-operation",
        "arguments": {"duration": 3, "steps": 3},
        "_meta": {"progressToken": "tok-resume"},
    }, request_id=request_id)
    post = SseStream(url, "POST", session_headers(sid, Accept=ACCEPT_BOTH), body=call, timeout=10)
    assert post.status == 200 and post.content_type.startswith("text/event-stream"), (post.status, post.content_type)

    first: dict[str, Any] | None = None
    before: list[dict[str, Any]] = []
    for ev in post.events_until(time.monotonic() + 8):
        before.append(ev)
        msg = ev.get("message")
        if msg and msg.get("method") == "notifications/progress":
            first = ev
            break
    assert first is not None, f"no progress event on the POST stream within 8 s: {before}"
    priming = before[0]
    assert priming.get("data", "") == "" and "id" in priming, f"POST stream did not open with a priming event: {before}"
    assert "id" in first, f"progress event has no SSE id: {first}"
    stream, seen_seq = split_event_id(first["id"])
    assert first["message"]["params"]["progress"] == 1, first
    assert first["message"]["params"]["progressToken"] == "tok-resume", first
    assert split_event_id(priming["id"])[0] == stream, f"priming and progress on different streams: {before}"
    post.abort()

    # Let step 2 happen with no reader attached (it must be kept for the replay); step 3 comes live.
    time.sleep(1.2)
    get = open_get_stream(url, sid, last_event_id=first["id"], timeout=10)
    after: list[dict[str, Any]] = []
    response: dict[str, Any] | None = None
    try:
        for ev in get.events_until(time.monotonic() + 8):
            after.append(ev)
            msg = ev.get("message")
            if msg and msg.get("id") == request_id and ("result" in msg or "error" in msg):
                response = msg
                break
        # Ended, not merely quiet for 3 s: `ended` is set only when the stream closed.
        ended = get.ended or (next(get.events_until(time.monotonic() + 3), None) is None and get.ended)
    finally:
        get.close()

    with_data = [ev for ev in after if ev.get("data", "").strip()]
    progress = [ev for ev in with_data if ev.get("message", {}).get("method") == "notifications/progress"]
    assert response is not None, f"no response for id {request_id!r} on the resumed stream; events: {after}"
    assert "result" in response, response
    assert "Long running operation completed" in tool_text(response["result"]), response
    values = [ev["message"]["params"]["progress"] for ev in progress]
    assert values == [2, 3], f"progress after resuming from {first['id']}: {values} (events {after})"
    assert all(ev["message"]["params"]["progressToken"] == "tok-resume" for ev in progress), progress
    ids = [split_event_id(ev["id"]) for ev in with_data if "id" in ev]
    assert len(ids) == len(with_data), f"an event without an id on the resumed stream: {with_data}"
    assert all(s == stream for s, _ in ids), f"resumed events from another stream than {stream}: {ids}"
    seqs = [q for _, q in ids]
    assert all(q > seen_seq for q in seqs), f"replayed events at or before {seen_seq}: {seqs}"
    assert seqs == sorted(set(seqs)), f"event sequence numbers not strictly increasing: {seqs}"
    assert ended, "the resumed stream stayed open after the final response"


def test_a_streamed_answer_asks_proxies_in_front_not_to_buffer_it(proxy_ab):
    """A POST answered as an event stream carries `X-Accel-Buffering: no`, so a reverse proxy
    in front (nginx) passes each event on as it comes: in the stateful era as in 2026-07-28."""
    url = proxy_ab.url
    sid = raw_initialize(url)
    call = rpc("tools/call", {
        "name": "alpha__trigger-long-running-operation",
        "arguments": {"duration": 1, "steps": 2},
        "_meta": {"progressToken": "tok-unbuffered"},
    })
    post = SseStream(url, "POST", session_headers(sid, Accept=ACCEPT_BOTH), body=call, timeout=10)
    try:
        assert post.status == 200 and post.content_type.startswith("text/event-stream"), (post.status, post.content_type)
        assert post.resp.getheader("x-accel-buffering") == "no", dict(post.resp.getheaders())
    finally:
        post.close()


# ---------------------------------------------------------------------------------------------
# 5. Pagination


def _list_all_raw(url: str, sid: str, method: str, key: str) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(50):
        req = rpc(method, {"cursor": cursor} if cursor else {})
        r = raw_request(url, body=req, session=sid)
        answer = r.response_for(req["id"])
        assert r.status == 200 and answer and "result" in answer, (method, cursor, r.status, r.body[:300])
        pages.append(answer["result"][key])
        cursor = answer["result"].get("nextCursor")
        if not cursor:
            return pages
    raise AssertionError(f"{method}: still a nextCursor after 50 pages")


def test_paged_lists_cover_everything_once(spawner):
    upstream = spawner.everything()
    paged = spawner.proxy("[proxy]\npage_size = 5\n\n" + servers_toml([("solo", upstream.url)]))
    unpaged = spawner.proxy([("solo", upstream.url)])
    sid_paged, sid_unpaged = raw_initialize(paged.url), raw_initialize(unpaged.url)

    for method, key, ident in (("tools/list", "tools", "name"), ("prompts/list", "prompts", "name"),
                               ("resources/list", "resources", "uri")):
        pages = _list_all_raw(paged.url, sid_paged, method, key)
        full_pages = _list_all_raw(unpaged.url, sid_unpaged, method, key)
        assert len(full_pages) == 1, f"{method} without page_size came in {len(full_pages)} pages"
        full = [item[ident] for item in full_pages[0]]
        got = [item[ident] for page in pages for item in page]
        sizes = [len(p) for p in pages]
        assert all(0 < n <= 5 for n in sizes), f"{method}: page sizes {sizes}"
        assert len(got) == len(set(got)), f"{method}: an item on two pages: {got}"
        assert set(got) == set(full) and len(got) == len(full), (
            f"{method}: paged {sorted(got)} vs unpaged {sorted(full)}")
        if method != "prompts/list" or len(full) > 5:
            assert len(pages) == -(-len(full) // 5), f"{method}: {len(full)} items in {len(pages)} pages"
    tools_total = sum(len(p) for p in _list_all_raw(paged.url, sid_paged, "tools/list", "tools"))
    assert tools_total > 5, f"only {tools_total} tools: paging was not exercised"

    for method in ("tools/list", "resources/list"):
        bad = rpc(method, {"cursor": "zzz"})
        r = raw_request(paged.url, body=bad, session=sid_paged)
        answer = r.response_for(bad["id"])
        assert answer is not None and "error" in answer, (method, r.status, r.body[:300])
        assert answer["error"]["code"] == -32602, (method, answer)


# ---------------------------------------------------------------------------------------------
# 6. Notifications queued before the standalone GET stream is opened


def test_notification_sent_before_get_stream_is_delivered_when_it_opens(proxy_ab):
    url = proxy_ab.url
    sid = raw_initialize(url)
    sub = rpc("resources/subscribe", {"uri": ALPHA_ARCH})
    r = raw_request(url, body=sub, session=sid)
    answer = r.response_for(sub["id"])
    assert r.status == 200 and answer and "result" in answer, (r.status, r.body[:300])
    r, answer = raw_call_tool(url, sid, "alpha__toggle-subscriber-updates", {})
    assert answer and "result" in answer and "Started" in tool_text(answer["result"]), (r.status, r.body[:300])
    toggled_at = time.monotonic()
    time.sleep(1.0)

    # server-everything sends one update at once, then one every 5 s: the first one must have been
    # kept for us, so it has to arrive well before the next tick.
    get = open_get_stream(url, sid, timeout=10)
    events: list[dict[str, Any]] = []
    update: dict[str, Any] | None = None
    try:
        for ev in get.events_until(toggled_at + 4.0):
            events.append(ev)
            msg = ev.get("message") or {}
            if msg.get("method") == "notifications/resources/updated":
                update = msg
                break
    finally:
        get.close()
        raw_call_tool(url, sid, "alpha__toggle-subscriber-updates", {})
    assert update is not None, (
        f"the resources/updated sent while no GET stream was open was not delivered when it opened "
        f"(waited until 4 s after the toggle); events: {events}")
    assert update["params"]["uri"] == ALPHA_ARCH, update
    ids = [split_event_id(ev["id"]) for ev in events if "id" in ev]
    assert len(ids) == len(events) and len({st for st, _ in ids}) == 1, f"GET stream event ids: {events}"


# ---------------------------------------------------------------------------------------------
# 7. Why event streams end (mcp_proxy_event_streams_ended_total{reason})
#
# Each test has its own proxy (two shards), so the open-stream gauge shows only its streams:
# the shard where it reads 1 is the one that accepted the connection. A session belongs to the
# shard named in its id; a GET accepted on the other shard is relayed over the mesh, and the
# reason it ended must cross it too.


def stream_metrics(admin_url: str) -> tuple[dict[str, float], dict[str, float]]:
    """mcp_proxy_event_streams_ended_total by reason and mcp_proxy_event_streams by shard."""
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    ended: dict[str, float] = {}
    open_by_shard: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mcp_proxy_event_streams_ended_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            ended[reason] = ended.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcp_proxy_event_streams{"):
            shard = line.split('shard="', 1)[1].split('"', 1)[0]
            open_by_shard[shard] = float(line.rsplit(" ", 1)[1])
    return ended, open_by_shard


def metrics_when(admin_url: str, settled, what: str, within: float = 20):
    """The first (ended, open) scrape for which `settled(ended, open)` holds: the proxy counts a
    stream's end just after writing it, and a /metrics rendering is reused for 100 ms."""
    deadline = time.monotonic() + within
    while True:
        ended, open_by_shard = stream_metrics(admin_url)
        if settled(ended, open_by_shard):
            return ended, open_by_shard
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {within} s; ended {ended}, open {open_by_shard}")
        time.sleep(0.1)


def only_open_stream(open_by_shard: dict[str, float]) -> int | None:
    """The shard writing the one open stream, if exactly one is open."""
    shards = [int(s) for s, n in open_by_shard.items() if n == 1]
    if sum(open_by_shard.values()) == 1 and len(shards) == 1:
        return shards[0]
    return None


def owner_shard(sid: str) -> int:
    # The id's first byte names the owner, modulo the shards running (Shard::owner_of).
    return int(sid[:2], 16) % 2


def read_to_end(stream: SseStream, within: float = 10) -> list[dict[str, Any]]:
    events = list(stream.events_until(time.monotonic() + within))
    assert stream.ended, f"the stream was still open after {within} s; events {events}"
    return events


def test_a_newer_get_stream_ends_the_older_counted_as_replaced(spawner):
    """A client opening a second GET stream for its session (a reconnect) ends the first one; that
    end counts as `replaced`, not `completed`, whether the shard that accepted the replaced stream
    owns the session or relays it from the owner."""
    upstream = spawner.everything()
    proxy = spawner.proxy([("solo", upstream.url)], shards=2)
    admin = proxy.admin_url
    assert admin, "the proxy printed no admin URL"
    sid = raw_initialize(proxy.url)
    owner = owner_shard(sid)
    before, _ = stream_metrics(admin)
    streams: list[SseStream] = []
    replaced_on: list[int] = []
    try:
        # New connections land on either shard (SO_REUSEPORT): go on until a replaced stream was
        # accepted on each. 16 tries leave a 2**-15 chance of never reaching one of them.
        current: int | None = None
        for _ in range(16):
            newer = open_get_stream(proxy.url, sid)
            streams.append(newer)
            if len(streams) > 1:
                older = streams[-2]
                events = read_to_end(older)
                assert all("id" in ev for ev in events), events
                replaced_on.append(current)
            want = len(replaced_on)
            _, open_now = metrics_when(
                admin,
                lambda e, o: e.get("replaced", 0) - before.get("replaced", 0) >= want
                and only_open_stream(o) is not None,
                f"{want} replaced stream(s) counted and one stream open")
            current = only_open_stream(open_now)
            if owner in replaced_on and 1 - owner in replaced_on:
                break
        ended, _ = stream_metrics(admin)
    finally:
        for st in streams:
            st.close()
    assert owner in replaced_on and 1 - owner in replaced_on, \
        f"16 new connections never landed on both shards (replaced streams were on {replaced_on})"
    delta = {r: ended.get(r, 0) - before.get(r, 0) for r in ended}
    assert delta.get("replaced") == len(replaced_on), delta
    assert delta.get("completed") == 0, f"a replaced stream counted as completed: {delta}"
    assert delta.get("client_closed") == 0, delta


def test_deleting_a_session_ends_its_open_get_stream_counted_as_session_ended(spawner):
    """DELETE of a session whose GET stream is open ends the stream for the client, counted as
    `session_ended`, both when the stream was accepted on the owning shard and when relayed."""
    upstream = spawner.everything()
    proxy = spawner.proxy([("solo", upstream.url)], shards=2)
    admin = proxy.admin_url
    assert admin, "the proxy printed no admin URL"
    before, _ = stream_metrics(admin)
    kinds: list[str] = []
    for _ in range(16):
        sid = raw_initialize(proxy.url)
        get = open_get_stream(proxy.url, sid)
        try:
            _, open_now = metrics_when(admin, lambda e, o: only_open_stream(o) is not None,
                                       "one stream open")
            accepted = only_open_stream(open_now)
            gone = raw_request(proxy.url, "DELETE", session=sid)
            assert gone.status == 200, (gone.status, gone.body[:300])
            read_to_end(get)
        finally:
            get.close()
        kinds.append("owned" if accepted == owner_shard(sid) else "relayed")
        want = len(kinds)
        metrics_when(admin, lambda e, o: e.get("session_ended", 0) - before.get("session_ended", 0) >= want
                     and sum(o.values()) == 0,
                     f"{want} stream(s) counted session_ended and none open")
        if {"owned", "relayed"} <= set(kinds):
            break
    ended, _ = stream_metrics(admin)
    assert {"owned", "relayed"} <= set(kinds), f"16 sessions never covered both paths: {kinds}"
    delta = {r: ended.get(r, 0) - before.get(r, 0) for r in ended}
    assert delta.get("session_ended") == len(kinds), delta
    assert delta.get("completed") == 0, f"a stream cut by DELETE counted as completed: {delta}"


def test_an_idle_session_expiring_under_its_open_get_stream_counts_session_ended(spawner):
    """A session that expires (no request for session_idle_timeout; an open GET stream with no
    event is no use of it) ends its GET stream, counted as `session_ended`."""
    upstream = spawner.everything()
    proxy = spawner.proxy('[proxy]\nsession_idle_timeout = "2s"\n\n' + servers_toml([("solo", upstream.url)]))
    admin = proxy.admin_url
    assert admin, "the proxy printed no admin URL"
    before, _ = stream_metrics(admin)
    sid = raw_initialize(proxy.url)
    get = open_get_stream(proxy.url, sid, timeout=20)
    try:
        read_to_end(get, within=20)
    finally:
        get.close()
    ended, _ = metrics_when(admin, lambda e, o: e.get("session_ended", 0) > before.get("session_ended", 0),
                            "the expired session's stream counted session_ended")
    delta = {r: ended.get(r, 0) - before.get(r, 0) for r in ended}
    assert delta.get("session_ended") == 1 and delta.get("completed") == 0, delta
    gone = raw_request(proxy.url, body=rpc("ping"), session=sid)
    assert gone.status == 404, f"the session did not expire: HTTP {gone.status}"
