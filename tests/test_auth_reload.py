"""Client identity follows the configuration file: `[auth]` is reloaded (admin API or SIGHUP)
without a restart.

Same peers and configuration as test_auth.py (the Python SDK as the client, server-everything
and server-memory behind a proxy with two shards, JWTs made with PyJWT against a JWKS file),
each test on a proxy of its own:
- a reload applies a new [auth] to the next request of open sessions (a rotated key works at
  once, a removed one is refused, a narrowed policy holds for sessions opened before it);
- a broken one (bad JWKS) is refused with its line while the running [auth] keeps serving;
- one that switches [auth] on or off succeeds, names `[auth] (on/off)` as waiting for a
  restart, applies the rest of the edit and keeps the running auth mode (closed stays closed);
- a reload that revokes a key or a subject ends the open streams opened with it, and only those.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

import harness
from harness import raw_request, rpc, text_of
from test_auth import (KEY_FULL, KEY_MEM, EventStream, Keys, config, error_message, open_session,
                       raw_init, run, session, stream_metrics, streams_ended, tool_names)

ADMIN_TOKEN = "auth-reload-admin-token-0123456789abcdef"
KEY_NEW = "rotated-in-key-0123456789abcdef"


def reloadable(keys: Keys, directory: Path, everything_url: str) -> str:
    """The module's configuration, with an admin token to reload it with."""
    text = config(keys, directory / "memory.jsonl", everything_url)
    return text.replace("[proxy]\n", f'[proxy]\nadmin_token = "{ADMIN_TOKEN}"\n', 1)


def ping(url: str, credential: str, sid: str | None = None):
    return raw_request(url, body=rpc("ping"), session=sid,
                       headers={"Authorization": f"Bearer {credential}"})


def test_a_reload_rotates_keys_and_applies_new_policies_to_open_sessions(spawner, tmp_path):
    keys = Keys(tmp_path)
    upstream = spawner.everything()
    text = reloadable(keys, tmp_path, upstream.url)
    proxy = spawner.proxy(text)
    full = raw_init(proxy.url, KEY_FULL)
    assert full.status == 200
    full_sid = full.header("mcp-session-id")
    assert raw_init(proxy.url, KEY_NEW).status == 401

    # The operator rotates "full"'s key, widens "mem-only" from memory to everything__echo and
    # moves it first (every session's client must be found again by name, not by position).
    rotated = text.replace(f'api_keys = ["{KEY_FULL}"]', f'api_keys = ["{KEY_NEW}"]')
    mem_block = f'[[auth.clients]]\nname = "mem-only"\napi_keys = ["{KEY_MEM}"]\nservers = ["memory"]\n'
    assert mem_block in rotated
    rotated = rotated.replace(mem_block, "")
    rotated = rotated.replace(
        "[[auth.clients]]\nname = \"full\"",
        f'[[auth.clients]]\nname = "mem-only"\napi_keys = ["{KEY_MEM}"]\n'
        'servers = ["everything"]\ntools = ["everything__echo"]\n\n'
        '[[auth.clients]]\nname = "full"', 1)

    async def go():
        with anyio.fail_after(120):
            async with session(proxy.url, KEY_MEM) as s:
                before = tool_names(await s.list_tools())
                assert before and all(n.startswith("memory__") for n in before), before
                proxy.config_path.write_text(rotated)
                status, answer = await anyio.to_thread.run_sync(harness.admin_reload, proxy, ADMIN_TOKEN)
                assert (status, answer.get("auth")) == (200, True), answer
                # Same session, same key: its next list and calls follow the new policy.
                assert tool_names(await s.list_tools()) == {"everything__echo"}
                echoed = await s.call_tool("everything__echo", {"message": "after reload"})
                assert "after reload" in text_of(echoed)
                try:
                    hidden = await s.call_tool("memory__read_graph", {})
                    assert hidden.isError and "unknown tool" in text_of(hidden), hidden
                except MCPError as e:
                    assert "unknown tool: memory__read_graph" in str(e)

    run(go)
    # New connections each time, so both shards are asked (each has its own copy of [auth]).
    for _ in range(4):
        old = raw_init(proxy.url, KEY_FULL)
        assert old.status == 401 and "unknown API key" in error_message(old)
        assert ping(proxy.url, KEY_FULL, full_sid).status == 401
        assert raw_init(proxy.url, KEY_NEW).status == 200
    # A JWT of a subject that stayed keeps working through the reload.
    assert raw_init(proxy.url, keys.token("ES256", sub="alice")).status == 200


def test_a_broken_reload_is_refused_and_the_running_auth_keeps_serving(spawner, tmp_path):
    keys = Keys(tmp_path)
    upstream = spawner.everything()
    text = reloadable(keys, tmp_path, upstream.url)
    proxy = spawner.proxy(text)
    sid = raw_init(proxy.url, KEY_FULL).header("mcp-session-id")
    assert sid

    # A key rotation together with an unreadable JWKS: the whole file is refused.
    proxy.config_path.write_text(text.replace(f'api_keys = ["{KEY_FULL}"]', f'api_keys = ["{KEY_NEW}"]'))
    good_jwks = keys.jwks.read_text()
    keys.jwks.write_text('{"keys": [{"kty": "oct", "k": "dG9vLXNob3J0"}]}')
    status, answer = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert status == 400, answer
    message = json.dumps(answer)
    assert proxy.config_path.name in message and "jwks_file" in message, message
    # Located like at start: the file, then line and column of jwks_file.
    jwks_line = text.splitlines().index(f'jwks_file = "{keys.jwks}"') + 1
    assert f"{proxy.config_path.name}:{jwks_line}:" in message, message

    # SIGHUP takes the same path; the log says why the running [auth] stays.
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload failed" not in proxy.stderr_tail(200) and time.monotonic() < deadline:
        time.sleep(0.1)
    tail = proxy.stderr_tail(200)
    assert "reload failed" in tail and "jwks_file" in tail, tail

    for _ in range(4):
        assert raw_init(proxy.url, KEY_FULL).status == 200
        assert ping(proxy.url, KEY_FULL, sid).status == 200
        assert raw_init(proxy.url, KEY_NEW).status == 401
        assert raw_init(proxy.url, keys.token("RS256", sub="alice")).status == 200

    # Once the file is fixed, the rotation it carried applies.
    keys.jwks.write_text(good_jwks)
    status, answer = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert (status, answer.get("auth")) == (200, True), answer
    assert raw_init(proxy.url, KEY_NEW).status == 200


def extra_server(url: str) -> str:
    return f'\n[[servers]]\nname = "extra"\nurl = "{url}"\n'


async def wait_for_tool(url: str, credential: str | None, name: str) -> None:
    """Lists tools through the SDK until `name` shows (discovery of a new server takes a moment)."""
    with anyio.fail_after(30):
        async with session(url, credential) as s:
            while name not in tool_names(await s.list_tools()):
                await anyio.sleep(0.1)


@pytest.mark.parametrize("started_on", [True, False], ids=["on-to-off", "off-to-on"])
def test_switching_auth_on_or_off_by_reload_waits_for_a_restart_and_the_rest_applies(
        spawner, tmp_path, started_on):
    """An operator flips `[auth] enabled` and adds a server in one edit, then reloads: the reload
    succeeds and names `[auth] (on/off)` as waiting for a restart, the server is added, and the
    proxy keeps the auth mode it runs with: a proxy with auth stays closed to a request without
    credentials (the old keys keep working), one without stays open. A later reload is not
    blocked by the waiting switch."""
    keys = Keys(tmp_path)
    upstream = spawner.everything()
    extra = spawner.everything()
    on = reloadable(keys, tmp_path, upstream.url)
    off = on.replace("enabled = true", "enabled = false", 1)
    started, flipped = (on, off) if started_on else (off, on)
    proxy = spawner.proxy(started)
    credential = KEY_FULL if started_on else None
    assert raw_init(proxy.url, None).status == (401 if started_on else 200)

    proxy.config_path.write_text(flipped + extra_server(extra.url))
    status, answer = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert status == 200, answer
    assert answer["not_applied_until_restart"] == ["[auth] (on/off)"], answer
    assert answer["changes"]["added"] == ["extra"] and answer["auth"] is False, answer
    run(wait_for_tool, proxy.url, credential, "extra__echo")
    # New connections each time, so both shards are asked.
    for _ in range(4):
        unauthenticated = raw_init(proxy.url, None)
        if started_on:
            assert unauthenticated.status == 401, unauthenticated.body[:300]
            assert raw_init(proxy.url, KEY_FULL).status == 200
        else:
            assert unauthenticated.status == 200, unauthenticated.body[:300]
    tail = proxy.stderr_tail(200)
    assert "WARN" in tail and "not applied until restart: [auth] (on/off)" in tail, tail

    # The next edit (the extra server removed) applies; the switch is still named.
    proxy.config_path.write_text(flipped)
    status, answer = harness.admin_reload(proxy, ADMIN_TOKEN)
    assert status == 200 and answer["changes"]["removed"] == ["extra"], answer
    assert answer["not_applied_until_restart"] == ["[auth] (on/off)"], answer
    assert raw_init(proxy.url, None).status == (401 if started_on else 200)


def test_a_reload_that_revokes_a_key_or_subject_ends_its_open_streams_and_only_those(spawner, tmp_path):
    keys = Keys(tmp_path)
    upstream = spawner.everything()
    text = reloadable(keys, tmp_path, upstream.url)
    proxy = spawner.proxy(text)
    svc = keys.token("ES256", sub="svc-reports")
    alice = keys.token("RS256", sub="alice")
    sids = {name: open_session(proxy.url, credential)
            for name, credential in [("full", KEY_FULL), ("mem", KEY_MEM), ("svc", svc), ("alice", alice)]}
    streams: list[EventStream] = []
    try:
        revoked_key = EventStream(proxy.url, KEY_FULL, sids["full"])
        streams.append(revoked_key)
        kept_key = EventStream(proxy.url, KEY_MEM, sids["mem"])
        streams.append(kept_key)
        revoked_subject = EventStream(proxy.url, svc, sids["svc"])
        streams.append(revoked_subject)
        kept_subject = EventStream(proxy.url, alice, sids["alice"])
        streams.append(kept_subject)

        # The operator revokes "full"'s leaked key and stops accepting the svc-* subjects.
        revoking = text.replace(f'api_keys = ["{KEY_FULL}"]', f'api_keys = ["{KEY_NEW}"]')
        revoking = revoking.replace('subjects = ["svc-*"]', 'subjects = ["batch-*"]')
        assert revoking.count(KEY_NEW) == 1 and "svc-*" not in revoking
        proxy.config_path.write_text(revoking)
        status, answer = harness.admin_reload(proxy, ADMIN_TOKEN)
        assert (status, answer.get("auth")) == (200, True), answer

        # Bounded, not timed: each stream whose credential is refused now ends cleanly (a cut
        # without the chunked terminator would raise instead).
        assert revoked_key.ended_within(30), "the stream of a revoked API key stayed open"
        assert revoked_subject.ended_within(30), "the stream of a revoked subject stayed open"
        # Operators see why both ended; the two kept streams are still counted open.
        revoked = streams_ended(proxy.admin_url, "credential_revoked", 2)
        assert revoked == 2, f"credential_revoked is {revoked}, want the 2 revoked streams"
        ended, open_streams = stream_metrics(proxy.admin_url)
        assert ended.get("token_expired") == 0 and ended.get("client_closed") == 0, ended
        assert open_streams == 2, open_streams
        # Every shard has looked at the new [auth] by now; the accepted ones stay open (a read
        # that times out leaves the response unreadable, so each is asked once, last).
        assert not kept_key.ended_within(2.0), "a stream of a key the reload kept was ended"
        assert not kept_subject.ended_within(2.0), "a stream of a subject the reload kept was ended"

        # And the revoked credentials are refused when the client reconnects.
        for credential, sid, status in [(KEY_FULL, sids["full"], 401), (svc, sids["svc"], 403)]:
            again = raw_request(proxy.url, method="GET", session=sid, accept="text/event-stream",
                                headers={"Authorization": f"Bearer {credential}"})
            assert again.status == status, (again.status, again.body[:300])
        assert ping(proxy.url, KEY_FULL, sids["full"]).status == 401
        assert ping(proxy.url, KEY_MEM, sids["mem"]).status == 200
    finally:
        for s in streams:
            s.close()
