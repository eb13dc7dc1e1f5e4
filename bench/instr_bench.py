#!/usr/bin/env python3
"""Instructions per proxied request of curfew builds, counted by callgrind.

On a shared 2-CPU VM, req/s and CPU time per request of two builds differ by
10-30 % between runs of the *same* build; instruction counts do not (the same
binary under the same load gives the same count within ~0.5 %). This script
runs each build's `curfew` under `valgrind --tool=callgrind` with
instrumentation off, sends a warm-up, turns instrumentation on, sends a fixed
number of requests with `curfew-load`, dumps the counts and divides curfew's
user-space instructions (kernel time is not counted) by the requests served.

Paths (workers outside valgrind; they bind `{socket}`, so no exec shim):

  keepalive  FastAPI `/plain`, 4 uvicorn workers (`--uds {socket}`),
             worker_concurrency 32, 32 client connections (pooled upstream)
  newconn    as keepalive, but every request on a new client connection
             (`Connection: close`, 8 client threads)
  sync       bench/attack_app.py `/`, 2 gunicorn sync workers
             (`--bind unix:{socket}`), worker_concurrency 1, 8 connections
             (a new worker connection per request)

Needs valgrind (Debian's package), the release binaries (`cargo build
--release --features dev-tools`; curfew-load comes from the last build or
--load) and the venv of scripts/python-env.sh.

    python3 bench/instr_bench.py --build before=/tmp/a/release --build after=target/release
    python3 bench/instr_bench.py --build main=target/release --paths sync --requests 4000
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_bench import free_port, stop  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

KEEPALIVE = {
    "cwd": REPO / "examples" / "fastapi_app",
    "curfew": ["-w", "4", "--worker-concurrency", "32"],
    "worker": ["uvicorn", "app:app", "--uds", "{socket}", "--no-access-log"],
    "url_path": "/plain",
    "connections": 32,
}

PATHS = {
    "keepalive": KEEPALIVE,
    # One client connection per request (`Connection: close`): what a
    # connection's own setup and teardown cost (HTTP/1.0 clients, probes,
    # scripts); the worker connections stay pooled.
    "newconn": {**KEEPALIVE, "connections": 8, "close": True},
    "sync": {
        "cwd": REPO / "bench",
        "curfew": ["-w", "2", "--worker-concurrency", "1"],
        "worker": ["gunicorn", "--workers", "1", "--no-control-socket",
                   "--bind", "unix:{socket}", "attack_app:app"],
        "url_path": "/",
        "connections": 8,
    },
}


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 120  # curfew under valgrind starts slowly
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"curfew exited during start-up; its log:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"curfew did not answer {url} within 120 s; its log:\n{log.read_text()[-2000:]}")


def load(load_bin: Path, port: int, spec: dict, n: int) -> dict:
    if spec.get("close"):
        return load_closing(port, spec, n)
    out = subprocess.run(
        [str(load_bin), "--url", f"http://127.0.0.1:{port}", "--path", spec["url_path"],
         "--connections", str(spec["connections"]), "--requests", str(n)],
        capture_output=True, text=True, check=True, timeout=600).stdout
    return json.loads(out)


def load_closing(port: int, spec: dict, n: int) -> dict:
    """`n` requests over `spec["connections"]` threads, each on a new
    connection closed after its answer (curfew-load keeps connections)."""
    counts = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    per = [n // spec["connections"] + (1 if i < n % spec["connections"] else 0)
           for i in range(spec["connections"])]

    def run(k: int) -> None:
        for _ in range(k):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", spec["url_path"], headers={"Connection": "close"})
                resp = c.getresponse()
                resp.read()
                # As curfew-load counts: a 2xx answer.
                ok = 200 <= resp.status < 300
                c.close()
            except OSError:
                ok = False
            with lock:
                counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=run, args=(k,)) for k in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {**counts, "errors": None}


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True, timeout=60)


def total_ir(dump: Path) -> int:
    out = subprocess.run(["callgrind_annotate", str(dump)], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    m = re.search(r"^\s*([\d,]+) \S* ?PROGRAM TOTALS", out, re.M) or re.search(r"([\d,]+).*PROGRAM TOTALS", out)
    if not m:
        sys.exit(f"no PROGRAM TOTALS in {dump}")
    return int(m.group(1).replace(",", ""))


def measure(build: Path, load_bin: Path, venv: Path, path: str, requests: int) -> dict:
    spec = PATHS[path]
    d = Path(tempfile.mkdtemp(prefix="curfew-instr-"))
    port = free_port()
    worker = [str(venv / "bin" / spec["worker"][0]), *spec["worker"][1:]]
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={d}/cg.%p", str(build / "curfew"), "serve",
           "--bind", f"127.0.0.1:{port}", *spec["curfew"],
           "--control-socket", str(d / "control.sock"), "--", *worker]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURFEW_")}
    env.pop("WEB_CONCURRENCY", None)
    log = d / "curfew.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=spec["cwd"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}{spec['url_path']}", proc, log)
        load(load_bin, port, spec, 500)  # warm-up: pools, buffers, lazy statics
        callgrind(proc.pid, "-i", "on")
        res = load(load_bin, port, spec, requests)
        callgrind(proc.pid, "-d")
        callgrind(proc.pid, "-i", "off")
    finally:
        stop(proc)
    dumps = sorted(d.glob("cg.*.1"))
    if not dumps:
        sys.exit(f"callgrind wrote no dump in {d}")
    ir = total_ir(dumps[0])
    ok = res["ok"]
    if res["failed"]:
        sys.exit(f"{build}: {res['failed']} requests failed: {res.get('errors')}")
    return {"ir_per_request": ir / max(ok, 1), "ok": ok, "dump": str(dumps[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", required=True, help="NAME=DIR holding a release `curfew`")
    ap.add_argument("--load", help="curfew-load binary (default: the last build's)")
    ap.add_argument("--venv", type=Path, default=REPO / ".venv")
    ap.add_argument("--paths", default="keepalive,sync", help="comma-separated: keepalive, newconn, sync")
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    builds = []
    for b in args.build:
        name, _, d = b.partition("=")
        p = Path(d).resolve()
        if not (p / "curfew").is_file():
            sys.exit(f"--build {b}: no curfew binary in {p}")
        builds.append((name, p))
    load_bin = Path(args.load) if args.load else builds[-1][1] / "curfew-load"
    if not load_bin.is_file():
        sys.exit(f"no curfew-load at {load_bin}: cargo build --release --features dev-tools (or --load PATH)")
    paths = [p for p in args.paths.split(",") if p]
    for p in paths:
        if p not in PATHS:
            sys.exit(f"--paths: unknown path {p!r} (keepalive, sync)")
    rows = []
    for path in paths:
        for name, build in builds:
            r = measure(build, load_bin, args.venv, path, args.requests)
            print(f"{path} {name}: {r['ir_per_request']:,.0f} instructions/request "
                  f"({r['ok']} requests; {r['dump']})", file=sys.stderr)
            rows.append((path, name, r))
    first = {}
    print("| path | build | curfew instructions per request | vs first build |")
    print("|---|---|---:|---:|")
    for path, name, r in rows:
        base = first.setdefault(path, r["ir_per_request"])
        print(f"| {path} | {name} | {r['ir_per_request']:,.0f} | {r['ir_per_request'] / base:.3f}× |")


if __name__ == "__main__":
    main()
