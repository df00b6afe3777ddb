"""One session served by a fleet of three proxies on a real etcd, whichever member each of its
requests reaches (a fresh connection to a member for every request), with a real
server-everything upstream.

- The session is opened on member 1, its GET stream runs on member 2, every other request goes
  to a member picked at random: progress notifications, a sampling round trip and a resource
  subscription's `notifications/resources/updated` all reach the client (the Python SDK).
  Then member 1 is killed (SIGKILL): the next requests of the session succeed on the survivors
  without a new initialize, and the GET stream comes back.
- A GET stream read on member 2, dropped, and resumed on member 3 with `Last-Event-ID`
  replays exactly the events sent in between.
- A stream the server ends for SSE polling (SEP-1699) on a session opened on member 1, called
  and resumed through member 2: the result arrives, and both members count the end as `polling`.
- A client cannot pose as a member: a request with a forged `Mcp-Proxy-Hop` is refused.
- Under load from `mcp-loadgen` (sessions opened on member 1, requests round-robin to members
  2 and 3), member 1 killed: at most the requests in flight fail, and every request after goes
  through on the same sessions.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid
import warnings

import anyio
import httpx2
import mcp_types as types
import pytest

import harness
from cluster_fixtures import ETCD_MISSING, admin, etcd, member_config  # noqa: F401 (etcd: a fixture)
from test_admin import wait_until
from test_relay import ARCH, SseStream, open_get_stream, session_headers, split_event_id

pytestmark = ETCD_MISSING

EV_ARCH = f"ev+{ARCH}"


@pytest.fixture
def fleet3(spawner, etcd):
    """Three members with server-everything as `ev`, each listing all three."""
    ev = spawner.everything()
    servers = f'[[servers]]\nname = "ev"\nurl = "{ev.url}"\n'
    prefix = f"/s-{uuid.uuid4().hex[:8]}/"
    members = [spawner.proxy(member_config(etcd, prefix, f"m{i}", servers), shards=2) for i in (1, 2, 3)]
    for m in members:
        wait_until(lambda m=m: len(admin(m, "GET", "cluster")[1].get("members", [])) == 3,
                   timeout=15, what="three members listed")
    return members


class Spread(httpx2.AsyncBaseTransport):
    """Sends every request on a fresh connection: initialize to the first member, GET streams
    to the second, anything else to a member picked at random among those still up."""

    def __init__(self, members: list[harness.Proxy]) -> None:
        self.ports = [m.port for m in members]
        self.up = list(self.ports)
        self.inner = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_keepalive_connections=0))
        self.sent: list[tuple[str, int]] = []

    async def handle_async_request(self, request):
        body = request.content if request.method == "POST" else b""
        if b'"initialize"' in body:
            port = self.ports[0]
        elif request.method == "GET" and self.ports[1] in self.up:
            port = self.ports[1]
        else:
            port = random.choice(self.up)
        self.sent.append((request.method, port))
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def answer_sampling(context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", model="fleet-test", stop_reason="endTurn",
                                     content=types.TextContent(type="text", text="sampled-by-the-fleet"))


def test_one_session_spread_over_the_fleet_and_its_owner_killed(fleet3):
    m1, m2, m3 = fleet3
    spread = Spread(fleet3)
    progress: list[float] = []
    updates: list[str] = []
    got_update = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(str(message.params.uri))
            got_update.set()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def go() -> dict:
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        out: dict = {}
        client = httpx2.AsyncClient(transport=spread, timeout=httpx2.Timeout(30, read=300))
        async with client, streamable_http_client(m1.url, http_client=client) as (read, write):
            async with ClientSession(read, write, sampling_callback=answer_sampling,
                                     message_handler=on_message) as s:
                await s.initialize()
                done = await s.call_tool("ev__trigger-long-running-operation", {"duration": 2, "steps": 4},
                                         progress_callback=on_progress)
                out["long"] = harness.text_of(done)
                sampled = await s.call_tool("ev__trigger-sampling-request", {"prompt": "hi", "maxTokens": 20})
                out["sampled"] = harness.text_of(sampled)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await s.subscribe_resource(EV_ARCH)
                await s.call_tool("ev__toggle-subscriber-updates", {})
                with anyio.move_on_after(12):
                    await got_update.wait()
                out["updates"] = list(updates)

                # The owner dies; the balancer stops sending to it.
                m1.proc.kill()
                m1.proc.wait()
                spread.up.remove(m1.port)
                echoes = []
                for i in range(6):
                    r = await s.call_tool("ev__echo", {"message": f"after the owner died {i}"})
                    echoes.append(harness.text_of(r))
                out["echoes"] = echoes
                # The session's subscription state went with its owner: subscribing again on
                # the member that took it over brings the updates back on the GET stream.
                before = len(updates)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await s.subscribe_resource(EV_ARCH)
                await s.call_tool("ev__toggle-subscriber-updates", {})
                with anyio.move_on_after(15):
                    while len(updates) == before:
                        await anyio.sleep(0.2)
                out["updates_after"] = updates[before:]
        return out

    out = anyio.run(go)
    ports = {p for _, p in spread.sent}
    assert len(ports) == 3, f"requests did not reach all three members: {spread.sent}"
    assert ("GET", m2.port) in spread.sent, spread.sent
    assert "Long running operation completed" in out["long"], out
    assert progress == [1, 2, 3, 4], progress
    assert "sampled-by-the-fleet" in out["sampled"], out
    assert EV_ARCH in out["updates"], out
    assert all(f"after the owner died {i}" in e for i, e in enumerate(out["echoes"])), out["echoes"]
    assert EV_ARCH in out["updates_after"], out


def test_a_get_stream_resumes_on_another_member_with_last_event_id(fleet3):
    m1, m2, m3 = fleet3
    sid = harness.raw_initialize(m1.url)
    sub = harness.raw_request(m2.url, body=harness.rpc("resources/subscribe", {"uri": EV_ARCH}), session=sid)
    assert sub.status == 200, sub.body
    stream = open_get_stream(m2.url, sid, timeout=15)
    try:
        r, answer = harness.raw_call_tool(m3.url, sid, "ev__toggle-subscriber-updates", {})
        assert r.status == 200 and answer and "result" in answer, (r.status, r.body)
        first = None
        while first is None:
            event = stream.next_event()
            assert event is not None, "the GET stream ended before an update"
            if event.get("message", {}).get("method") == "notifications/resources/updated":
                first = event
    finally:
        stream.close()
    # Two more updates (one every 5 s) are sent while no stream is open.
    time.sleep(11)
    resumed = open_get_stream(m3.url, sid, last_event_id=first["id"], timeout=15)
    try:
        # A resumed stream may open with a priming event (an id, no data).
        replayed = resumed.next_event()
        while replayed is not None and "message" not in replayed:
            replayed = resumed.next_event()
    finally:
        resumed.close()
    assert replayed is not None and replayed.get("message", {}).get("method") == "notifications/resources/updated", replayed
    (s0, n0), (s1, n1) = split_event_id(first["id"]), split_event_id(replayed["id"])
    assert (s1, n1) == (s0, n0 + 1), (first["id"], replayed["id"])
    harness.raw_call_tool(m1.url, sid, "ev__toggle-subscriber-updates", {})


def test_a_client_cannot_pose_as_a_member(fleet3):
    m1, m2, _ = fleet3
    sid = harness.raw_initialize(m1.url)
    forged = harness.raw_request(m2.url, body=harness.rpc("tools/list"), session=sid,
                                 headers={"Mcp-Proxy-Hop": "00000000.0.AAAA"})
    assert forged.status == 403, forged.body
    assert "Mcp-Proxy-Hop" in forged.body.decode(), forged.body
    ok = harness.raw_request(m2.url, body=harness.rpc("tools/list"), session=sid)
    assert ok.status == 200 and json.dumps(ok.messages).count("ev__echo"), ok.body


def test_an_owner_killed_under_load_fails_at_most_its_requests_in_flight(fleet3):
    """mcp-loadgen opens its sessions on member 1 and sends the load round-robin to members 2
    and 3; member 1 is killed in the middle. Only requests in flight at that moment may fail;
    the load goes on on the same sessions (the load generator would re-initialize on a 404)."""
    m1, m2, m3 = fleet3
    loadgen = harness.PROXY_BIN.parent / "mcp-loadgen"
    concurrency = 4
    killer = threading.Timer(4.0, m1.proc.kill)
    killer.start()
    try:
        out = subprocess.run(
            [str(loadgen), "run", "--json", "--quiet", "--max-error-rate", "1", "--skip-tool-check",
             "--open-url", m1.url, "--url", m2.url, "--url", m3.url, "--sessions", "8",
             "--concurrency", str(concurrency), "--warmup", "1s", "--duration", "7s",
             "--timeline", "500ms", "--timeout", "10s",
             "--mix", 'tools/call:ev__echo:{"message":"under load"}'],
            capture_output=True, text=True, timeout=60)
    finally:
        killer.cancel()
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert m1.proc.poll() is not None, "member 1 was not killed during the run"
    print(f"{report['requests']} requests, {report['errors']} failed: {report['errors_by_kind']}")
    assert report["errors"] <= concurrency, report["error_samples"]
    after = [s for s in report["timeline"] if s["at_s"] >= 4.0]
    assert after and all(s["requests"] > 0 and s["errors"] == 0 for s in after), report["timeline"]


def test_a_stream_the_server_ends_for_polling_is_relayed_and_resumed_through_another_member(spawner, etcd):
    """SEP-1699 across a member hop: the session is opened on member 1, its tool call and the
    resumption go to member 2. The server closes the POST stream after its priming event with a
    retry hint; member 2 relays that end, the client resumes there with Last-Event-ID and gets
    the result the server sent meanwhile, and member 2 counts the stream it relayed as ended
    for `polling`, as member 1 counts its own."""
    from conformance import suite
    from test_relay import metrics_when

    fixture = suite.start_fixture(eras="stateful")
    try:
        servers = f'[[servers]]\nname = "fixture"\nurl = "{fixture.url}"\nprefix = ""\n'
        prefix = f"/p-{uuid.uuid4().hex[:8]}/"
        m1, m2 = (spawner.proxy(member_config(etcd, prefix, f"m{i}", servers), shards=1) for i in (1, 2))
        for m in (m1, m2):
            wait_until(lambda m=m: len(admin(m, "GET", "cluster")[1].get("members", [])) == 2,
                       timeout=15, what="two members listed")
        sid = harness.raw_initialize(m1.url)
        answer, transcript = suite.call_tool_resuming(m2.url, sid, "test_reconnection", "over-the-hop")
        assert answer is not None and "result" in answer and not answer["result"].get("isError"), \
            "\n".join(transcript)
        assert any("GET Last-Event-ID" in line for line in transcript), transcript
        for m in (m1, m2):
            metrics_when(m.admin_url, lambda ended, _: ended.get("polling", 0) >= 1,
                         f"member {m.url}: the stream ended for SSE polling counted as `polling`")
    finally:
        fixture.kill()
