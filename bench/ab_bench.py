#!/usr/bin/env python3
"""A/B benchmark of two or more curfew builds on the same app and load.

For each build (a directory holding release `curfew` binaries) it measures:

  - the size of the `curfew` binary;
  - curfew's own RSS (the master process, not its workers) after start, idle;
  - /plain throughput of the FastAPI example with 4 uvicorn workers
    (`worker_concurrency = 32`), 32 connections, `curfew-load` (the same load
    generator for every build), and curfew's CPU time per request (user +
    system of the curfew process only, from /proc/<pid>/stat).

Rounds alternate between the builds so a busy machine skews them alike.
Stdlib only. `--args NAME=ARGS` adds curfew flags to one build's runs, so
one build can be compared with itself under two settings (the access log
off and on).

    python3 bench/ab_bench.py --build before=/path/a/target/release \\
        --build after=/path/b/target/release --rounds 2 --seconds 8
    python3 bench/ab_bench.py --build off=target/release --build file=target/release \\
        --args "file=--access-log /tmp/ab-access.log" --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP_DIR = REPO / "examples" / "fastapi_app"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(build: Path, port: int, extra: list[str]) -> subprocess.Popen:
    uvicorn = REPO / ".venv" / "bin" / "uvicorn"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURFEW_")}
    env.pop("WEB_CONCURRENCY", None)
    cmd = [
        str(build / "curfew"), "serve", "-w", "4", "--bind", f"127.0.0.1:{port}",
        "--worker-concurrency", "32", "--control-socket", f"/tmp/curfew-ab-{port}.sock",
        *extra, "--", str(uvicorn), "app:app", "--fd", "3", "--no-access-log",
    ]
    p = subprocess.Popen(cmd, cwd=APP_DIR, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/plain", timeout=1) as r:
                if r.status == 200:
                    return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{build}: curfew did not serve within 60 s")


def stop(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def one_round(name: str, build: Path, load: Path, seconds: float, extra: list[str]) -> dict:
    port = free_port()
    p = start(build, port, extra)
    try:
        time.sleep(1.0)
        idle_rss = rss_kib(p.pid)
        # Warm-up, then the measured run.
        subprocess.run([str(load), "--url", f"http://127.0.0.1:{port}", "--path", "/plain",
                        "--connections", "32", "--duration-ms", "2000"],
                       capture_output=True, check=True)
        cpu0 = cpu_seconds(p.pid)
        out = subprocess.run([str(load), "--url", f"http://127.0.0.1:{port}", "--path", "/plain",
                              "--connections", "32", "--duration-ms", str(int(seconds * 1000))],
                             capture_output=True, check=True, text=True).stdout
        cpu = cpu_seconds(p.pid) - cpu0
        res = json.loads(out)
        ok = res["ok"]
        failed = res["failed"]
        elapsed = res["duration_ms"] / 1000
        return {
            "name": name, "rps": ok / elapsed, "failed": failed,
            "cpu_us_per_req": cpu / max(ok, 1) * 1e6, "idle_rss_kib": idle_rss,
        }
    finally:
        stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="name=DIR with release binaries")
    ap.add_argument("--load", help="curfew-load binary (default: the last build's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--args", action="append", default=[], help="NAME=ARGS: curfew flags for that build")
    args = ap.parse_args()
    builds = [(b.split("=", 1)[0], Path(b.split("=", 1)[1])) for b in args.build]
    extra = {a.split("=", 1)[0]: shlex.split(a.split("=", 1)[1]) for a in args.args}
    load = Path(args.load) if args.load else builds[-1][1] / "curfew-load"
    results: dict[str, list[dict]] = {n: [] for n, _ in builds}
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else list(reversed(builds))
        for name, build in order:
            res = one_round(name, build, load, args.seconds, extra.get(name, []))
            results[name].append(res)
            print(f"round {r + 1} {name}: {res['rps']:.0f} req/s, "
                  f"{res['cpu_us_per_req']:.1f} µs CPU/req, failed {res['failed']}", file=sys.stderr)
    base = builds[0][0]
    base_rps = statistics.mean(x["rps"] for x in results[base])
    print(f"| build | binary size | idle RSS | /plain req/s (rounds) | vs {base} | curfew CPU per request | failed |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, build in builds:
        rs = results[name]
        size = (build / "curfew").stat().st_size
        rps = [x["rps"] for x in rs]
        cpu = " / ".join(f"{x['cpu_us_per_req']:.1f}" for x in rs)
        print(f"| {name} | {size / 2**20:.1f} MiB | {statistics.median(x['idle_rss_kib'] for x in rs) / 1024:.1f} MiB "
              f"| {' / '.join(f'{v:,.0f}' for v in rps)} | {statistics.mean(rps) / base_rps:.2f}× "
              f"| {cpu} µs | {sum(x['failed'] for x in rs)} |")


if __name__ == "__main__":
    main()
