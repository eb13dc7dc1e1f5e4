#!/usr/bin/env python3
"""Where the CPU goes per request with sync workers: nginx + gunicorn against
curfew alone (attack_bench's setups and its `none` load), split by process.

For each round and setup: start the setup (bench/attack_app.py, 2 gunicorn
sync workers), warm up 1 s, run `wrk -t1 -c8` for --seconds, and over its
middle (from 1 s after the start to 1 s before the end) read the CPU time
(user + system, /proc/PID/stat) of every process of the machine and the
machine's idle share (/proc/stat). The table gives, per request, the CPU of
the proxy (nginx's processes / curfew), the gunicorn processes (masters and
workers), wrk and everything else, plus the idle share and req/s; one row per
round, setups alternating, then the medians.

On a machine where the setup is CPU-bound (2 CPUs shared by wrk, the proxy and
2 workers), req/s ≈ CPUs × (1 − idle) ÷ the sum of the per-request columns:
the table says which part of a gap comes from the proxy's own CPU, from the
workers' and from idle time.

Needs what attack_bench.py needs (nginx, wrk, a venv with gunicorn + flask).

    python3 bench/sync_cpu.py --rounds 3
    python3 bench/sync_cpu.py --build main=target/release/curfew --build new=/tmp/t/release/curfew
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attack_bench as ab  # noqa: E402  (setups, wrk parsing)
import http_bench as hb  # noqa: E402  (process cleanup)

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
GROUPS = ("proxy", "gunicorn", "wrk", "other")


def cpu_by_pid() -> dict[int, tuple[str, str, int]]:
    """pid -> (comm, cmdline, user + system ticks)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        f = stat[stat.rindex(")") + 2:].split()
        out[int(d)] = (comm, cmd, int(f[11]) + int(f[12]))
    return out


def group(comm: str, cmd: str) -> str:
    if comm.startswith(("nginx", "curfew")):
        return "proxy"
    if "gunicorn" in cmd:
        return "gunicorn"
    if comm == "wrk":
        return "wrk"
    return "other"


def machine() -> tuple[int, int]:
    """(all ticks, idle + iowait ticks) of /proc/stat."""
    v = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return sum(v), v[3] + v[4]


def measure(args, setup_name: str, curfew: str, tmp: Path) -> dict:
    ns = argparse.Namespace(curfew=curfew, venv=args.venv, nginx=args.nginx,
                            nginx_mime_types=args.nginx_mime_types, wrk=args.wrk)
    setup = ab.Setup(setup_name, ns, Path(tempfile.mkdtemp(dir=tmp)), "cell")
    try:
        setup.start()
        url = f"http://127.0.0.1:{setup.port}/"
        subprocess.run([args.wrk, "-t1", "-c8", "-d1s", url], capture_output=True, timeout=60)
        wrk = subprocess.Popen([args.wrk, "-t1", "-c8", f"-d{args.seconds}s", url],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        p0, (t0, i0), w0 = cpu_by_pid(), machine(), time.monotonic()
        time.sleep(args.seconds - 2)
        p1, (t1, i1), w1 = cpu_by_pid(), machine(), time.monotonic()
        out, _ = wrk.communicate(timeout=args.seconds + 60)
    finally:
        setup.stop()
    rps = ab.parse_wrk(out)["rps"]
    reqs = rps * (w1 - w0)
    ticks = dict.fromkeys(GROUPS, 0)
    for pid, (comm, cmd, c1) in p1.items():
        c0 = p0[pid][2] if pid in p0 else 0
        ticks[group(comm, cmd)] += c1 - c0
    row = {g: (ticks[g] / TICK / reqs * 1e6 if reqs else 0.0) for g in GROUPS}
    row["rps"] = rps
    row["idle"] = (i1 - i0) / max(t1 - t0, 1) * 100
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", metavar="NAME=PATH",
                    help="a curfew binary to measure (repeatable); default: curfew=target/release/curfew")
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("CURFEW_VENV") or REPO / ".venv"))
    ap.add_argument("--nginx", default="nginx")
    ap.add_argument("--nginx-mime-types", default="/etc/nginx/mime.types")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8, help="wrk duration (the middle seconds - 2 are measured)")
    args = ap.parse_args()
    if args.seconds < 4 or args.rounds < 1:
        sys.exit("--seconds must be at least 4 and --rounds at least 1")
    builds = []
    for b in args.build or [f"curfew={REPO / 'target' / 'release' / 'curfew'}"]:
        name, sep, path = b.partition("=")
        if not sep or not name or not Path(path).is_file():
            sys.exit(f"--build {b!r}: expected NAME=PATH to a curfew binary")
        builds.append((name, str(Path(path).resolve())))
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    hb.become_subreaper()
    cells = [("nginx + gunicorn", "nginx", "")] + [(n, "curfew", p) for n, p in builds]
    rows: dict[str, list[dict]] = {c[0]: [] for c in cells}
    tmp = Path(tempfile.mkdtemp(prefix="curfew-sync-cpu-"))
    head = f"| round | setup | req/s | idle % | {' | '.join(f'{g} µs/req' for g in GROUPS)} |"
    print(head)
    print("|---|---|" + "---:|" * (2 + len(GROUPS)))
    try:
        for rnd in range(args.rounds):
            order = cells[rnd % len(cells):] + cells[:rnd % len(cells)]
            for label, setup_name, curfew in order:
                r = measure(args, setup_name, curfew, tmp)
                rows[label].append(r)
                print(f"| {rnd + 1} | {label} | {r['rps']:,.0f} | {r['idle']:.1f} | "
                      + " | ".join(f"{r[g]:.0f}" for g in GROUPS) + " |", flush=True)
    finally:
        hb.kill_all_sessions()
    for label, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"| median | {label} | {med['rps']:,.0f} | {med['idle']:.1f} | "
              + " | ".join(f"{med[g]:.0f}" for g in GROUPS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
