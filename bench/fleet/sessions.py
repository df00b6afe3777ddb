"""The forwarding cost and an owner's death under load, in a fleet of three proxies on a real
etcd, with `mcp-loadgen upstream` as the MCP server (so the proxies are what is measured).

    tests/.venv/bin/python bench/fleet/sessions.py [--duration 5s]

1. `local`: sessions opened on member 1, load sent to member 1 (every request served there).
2. `forwarded`: the same sessions' load sent to member 2, which forwards each request to
   member 1 (its owner) over HTTP.
3. `owner killed`: sessions opened on member 1, load sent round-robin to members 2 and 3;
   member 1 is killed (SIGKILL) in the middle: the report's timeline shows the failed requests
   and how long until the survivors answered for its sessions.

Each member runs one shard; the load generator one thread. Needs the release binaries
(`cargo build --release --workspace`) and etcd (`tests/run.sh` installs it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import fleet  # noqa: E402
import harness  # noqa: E402

LOADGEN = ROOT / "target" / "release" / "mcp-loadgen"
MIX = 'tools/call:up__echo:{"message":"hello"}'


def loadgen(*args: str) -> dict:
    out = subprocess.run([str(LOADGEN), "run", "--json", "--quiet", "--skip-tool-check",
                          "--max-error-rate", "1", "--mix", MIX, *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--concurrency", default="8")
    a = parser.parse_args()
    started: list = []
    etcd = fleet.Etcd()
    try:
        etcd.start()
        up = harness.spawn("loadgen-upstream", [str(LOADGEN), "upstream", "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE)
        started.append(up)
        line = up.proc.stdout.readline()
        up_url = line.split("ready:", 1)[1].strip()
        prefix = f"/bench-{uuid.uuid4().hex[:8]}/"
        servers = f'[[servers]]\nname = "up"\nurl = "{up_url}"\n'
        members = []
        for i in (1, 2, 3):
            m = harness.start_proxy(fleet.member_config(etcd, prefix, f"m{i}", servers), shards=1)
            started.append(m)
            members.append(m)
        m1, m2, m3 = members
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(len(fleet.admin(m, "GET", "cluster")[1].get("members", [])) == 3 for m in members):
                break
            time.sleep(0.2)
        common = ["--sessions", "16", "--concurrency", a.concurrency, "--warmup", "1s"]
        local = loadgen("--url", m1.url, "--duration", a.duration, *common)
        forwarded = loadgen("--open-url", m1.url, "--url", m2.url, "--duration", a.duration, *common)
        for name, r in (("local", local), ("forwarded", forwarded)):
            lat = r["latency_us"]
            print(f"{name:>10}: {r['throughput_rps']:.0f} req/s, p50 {lat['p50']:.0f} us, "
                  f"p99 {lat['p99']:.0f} us, errors {r['errors']}")

        def kill_later() -> None:
            time.sleep(1 + 3)
            m1.child.proc.kill()
            print(f"member 1 killed at {time.strftime('%H:%M:%S')}", file=sys.stderr)

        killer = threading.Thread(target=kill_later)
        killer.start()
        killed = loadgen("--open-url", m1.url, "--url", m2.url, "--url", m3.url, "--duration", "8s",
                         "--timeline", "100ms", "--timeout", "5s", *common)
        killer.join()
        print(f"owner killed: {killed['throughput_rps']:.0f} req/s over 8 s, errors {killed['errors']} "
              f"{killed['errors_by_kind']} {killed['error_samples']}")
        # The slices around the kill (3 s into the measured window): requests, errors, max latency.
        for s in killed["timeline"]:
            if 2.5 <= s["at_s"] <= 4.5:
                print(f"  at {s['at_s']:.1f} s: {s['requests']} requests, {s['errors']} errors, "
                      f"p50 {s['p50_us']:.0f} us, max {s['max_us']:.0f} us")
    finally:
        for p in reversed(started):
            p.kill()
        etcd.close()


if __name__ == "__main__":
    main()
