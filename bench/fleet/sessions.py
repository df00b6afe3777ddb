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

import cluster_fixtures as fleet  # noqa: E402
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
        line = up.proc.stdout.readline().decode()
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
        for concurrency in (1, int(a.concurrency)):
            common = ["--sessions", "16", "--concurrency", str(concurrency), "--warmup", "1s"]
            local = loadgen("--url", m1.url, "--duration", a.duration, *common)
            forwarded = loadgen("--open-url", m1.url, "--url", m2.url, "--duration", a.duration, *common)
            for name, r in (("local", local), ("forwarded", forwarded)):
                lat = r["latency_us"]
                print(f"concurrency {concurrency:>2} {name:>10}: {r['throughput_rps']:.0f} req/s, "
                      f"p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us, errors {r['errors']}")

        kill_after = 4.0  # seconds after the load generator starts: about 3 s into its window
        killer = threading.Timer(kill_after, m1.child.proc.kill)
        killer.start()
        common = ["--sessions", "16", "--concurrency", a.concurrency, "--warmup", "1s"]
        killed = loadgen("--open-url", m1.url, "--url", m2.url, "--url", m3.url, "--duration", "8s",
                         "--timeline", "100ms", "--timeout", "5s", *common)
        killer.join()
        print(f"owner killed: {killed['requests']} requests, {killed['errors']} failed "
              f"{killed['errors_by_kind']} {killed['error_samples']}")
        # Requests per 100 ms slice and the slowest answer, around the kill.
        for sl in killed["timeline"]:
            if 2.5 <= sl["at_s"] <= 3.6:
                print(f"  at {sl['at_s']:.1f} s: {sl['requests']:>4} requests, {sl['errors']} errors, "
                      f"p50 {sl['p50_us']:.0f} us, max {sl['max_us']:.0f} us")
        slowest = max(killed["timeline"], key=lambda sl: sl["max_us"])
        print(f"  slowest answer: {slowest['max_us']:.0f} us at {slowest['at_s']:.1f} s")
    finally:
        for p in reversed(started):
            p.kill()
        etcd.close()


if __name__ == "__main__":
    main()
