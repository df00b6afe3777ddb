"""Tool search by meaning, through the proxy with real servers.

Topology: server-everything over Streamable HTTP and server-filesystem over stdio behind one
proxy (two shards); for the catalog change, the proxy starts with server-filesystem alone and
server-everything is added through the admin API.

What is held here:
- needs that share no word with the tool they mean rank it first ("give me a small sample
  picture" -> get-tiny-image; "show what is inside a folder" -> a folder-listing tool);
- `explain` says why: the need's words and the tool words nearest in meaning;
- a server added at run time is found by the first search after its tools are listed (the
  index of the new catalog is built off the shards and waited for), while requests keep
  being answered;
- `mcpctl tools search --explain` gives the same ranking, with the reasons.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import harness
from harness import NODE_BIN, raw_initialize, raw_request, rpc
from test_admin import MCPCTL, TOKEN, mcpctl, mcpctl_bin  # noqa: F401

FILESYSTEM_BIN = NODE_BIN / "mcp-server-filesystem"


def config(files: Path, everything_url: str | None) -> str:
    text = f"""
[proxy]
admin_token = "{TOKEN}"

[[servers]]
name = "filesystem"
command = "{FILESYSTEM_BIN}"
args = ["{files}"]
"""
    if everything_url:
        text += f'\n[[servers]]\nname = "everything"\nurl = "{everything_url}"\n'
    return text


def search(url: str, sid: str, query: str, **extra) -> list[dict]:
    req = rpc("tools/call", {"name": "proxy__search_tools", "arguments": {"query": query, **extra}})
    answer = raw_request(url, body=req, session=sid).response_for(req["id"])
    assert answer and "result" in answer, answer
    return answer["result"]["structuredContent"]["tools"]


def tool_names(url: str, sid: str) -> set[str]:
    req = rpc("tools/list", {})
    answer = raw_request(url, body=req, session=sid).response_for(req["id"])
    return {t["name"] for t in answer["result"]["tools"]}


def wait_for(pred, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_needs_without_shared_words_rank_the_right_tool_first(spawner, mcpctl_bin):
    files = Path(tempfile.mkdtemp(prefix="search-"))
    ev = spawner.everything()
    proxy = spawner.proxy(config(files, ev.url))
    sid = raw_initialize(proxy.url)
    wait_for(lambda: {"everything__get-tiny-image", "filesystem__list_directory"} <= tool_names(proxy.url, sid),
             "both servers' tools listed")

    # Three tools list a folder (flat, with sizes, as a tree); the static embedding scores them
    # within 0.02 of one another, so any of them may come first.
    folder = [t["name"] for t in search(proxy.url, sid, "show what is inside a folder", k=3)]
    listing = {"filesystem__list_directory", "filesystem__list_directory_with_sizes",
               "filesystem__directory_tree"}
    assert folder[0] in listing, folder
    picture = search(proxy.url, sid, "give me a small sample picture", k=3)
    assert picture[0]["name"] == "everything__get-tiny-image", [t["name"] for t in picture]

    why = search(proxy.url, sid, "show what is inside a folder", k=1, explain=True)[0]["why"]
    pairs = {(r["need_word"], r["tool_word"]) for r in why["related_words"]}
    assert any(n == "folder" and t.startswith("director") for n, t in pairs), why
    assert why["semantic_part"] > 0

    # The command line ranks the same way, and says why.
    r = mcpctl(proxy, "tools", "search", "give me a small sample picture", "-k", "3", "--explain",
               "--mcp-url", proxy.url)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if "__" in line]
    assert rows[0][1] == "everything__get-tiny-image", r.stdout
    assert "related in meaning: " in r.stdout and "picture ~ image" in r.stdout, r.stdout


def test_a_server_added_is_found_by_the_next_search(spawner):
    files = Path(tempfile.mkdtemp(prefix="search-"))
    proxy = spawner.proxy(config(files, None))
    sid = raw_initialize(proxy.url)
    wait_for(lambda: "filesystem__list_directory" in tool_names(proxy.url, sid), "filesystem listed")
    before = search(proxy.url, sid, "give me a small sample picture", k=3)
    assert all(not t["name"].startswith("everything__") for t in before)

    # Requests keep being answered while the catalog changes and the index is rebuilt.
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def pings() -> None:
        while not stop.is_set():
            req = rpc("ping", {})
            answer = raw_request(proxy.url, body=req, session=sid).response_for(req["id"])
            if not answer or "result" not in answer:
                failures.append(repr(answer))
            answered[0] += 1

    pinger = threading.Thread(target=pings, daemon=True)
    pinger.start()
    try:
        ev = spawner.everything()
        body = json.dumps({"name": "everything", "url": ev.url}).encode()
        req = urllib.request.Request(f"{proxy.admin_url}/api/v1/servers", method="POST", data=body,
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status in (200, 201)
        wait_for(lambda: "everything__get-tiny-image" in tool_names(proxy.url, sid), "everything listed")
        after = search(proxy.url, sid, "give me a small sample picture", k=3)
        assert after and after[0]["name"] == "everything__get-tiny-image", [t["name"] for t in after]
    finally:
        stop.set()
        pinger.join(timeout=10)
    assert not failures, failures[:3]
    assert answered[0] > 0
