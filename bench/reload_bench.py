#!/usr/bin/env python3
"""Reload benchmark: failed requests during repeated reloads under load.

Runs the FastAPI example (examples/fastapi_app, `app:app`) with N workers under
curfew, gunicorn and uvicorn, puts it under load with curfew-load and reloads
it --reloads times (default 10) while the load runs:

  curfew    SIGHUP to curfew (zero-downtime reload); the next reload waits for
            the "Reload complete" log line, then --spacing seconds;
  gunicorn  SIGHUP to the master (gunicorn's graceful reload); the next reload
            waits until N new workers logged "Application startup complete"
            and the old workers are gone, then --spacing seconds;
  uvicorn   no reload of a running multi-worker server: SIGTERM to the master,
            wait for it to exit, start it again on the same port (a deploy
            without a supervisor), wait for /health, then --spacing seconds.

Reported per server: reloads done, requests sent, failed (sent but no complete
response), 5xx, refused connects, time per reload. Stdlib only, reuses the
helpers of bench/http_bench.py. See bench/README.md.

    python3 bench/reload_bench.py            # print the table
    python3 bench/reload_bench.py --write    # ... and record it in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench as hb  # noqa: E402  (helpers: Server, Load, cleanup, machine info)

SECTION_BEGIN = "<!-- reload_bench:begin -->"
SECTION_END = "<!-- reload_bench:end -->"
RELOAD_TIMEOUT_S = 60.0  # longest one reload may take before we give up waiting for it
log = hb.log


@dataclass
class Res:
    name: str
    wanted: int = 0
    done: int = 0
    sent: int | None = None
    failed: int | None = None
    n5xx: int | None = None
    refused: int | None = None
    status: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    first_errors: list = field(default_factory=list)
    reload_ms: list[float] = field(default_factory=list)
    killed: int = 0
    load_s: float | None = None
    problems: list[str] = field(default_factory=list)
    log_excerpts: list[str] = field(default_factory=list)


def count_in_log(srv: hb.Server, needle: str) -> int:
    return srv.log_text().count(needle)


def wait_until(pred, timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return pred()


def children(pid: int) -> set[int]:
    return {p.pid for p in hb.all_procs() if p.ppid == pid and p.state != "Z"}


def run_one(name: str, spec: hb.ServerSpec, args, logdir: Path, load_bin: Path, res: Res) -> None:
    port = hb.free_port()
    res.wanted = args.reloads
    servers: list[hb.Server] = []
    load: hb.Load | None = None
    duration_ms = int(args.load_duration_s * 1000)
    try:
        srv = hb.Server(spec, port, logdir, "gen0").start()
        servers.append(srv)
        boot = srv.wait_healthy()
        log(f"{name}: healthy after {boot*1000:.0f} ms on :{port}; load for {duration_ms/1000:.0f} s")
        load = hb.Load(load_bin, port, args.paths, args.connections, duration_ms,
                       args.timeout_ms, logdir).start()
        t_load = load.wait_started()
        t_end = t_load + duration_ms / 1000.0
        time.sleep(args.spacing_s)
        try:
            for i in range(args.reloads):
                # leave enough load time after the last reload to see its effect
                if time.monotonic() + args.min_tail_s > t_end:
                    res.problems.append(f"load ended before all reloads: {res.done} of {args.reloads} done "
                                        f"(raise --load-duration)")
                    break
                t0 = time.monotonic()
                if name == "curfew":
                    before = count_in_log(srv, "Reload complete")
                    failed_before = count_in_log(srv, "Reload failed")
                    os.kill(srv.pid, signal.SIGHUP)
                    ok = wait_until(lambda: count_in_log(srv, "Reload complete") > before
                                    or count_in_log(srv, "Reload failed") > failed_before
                                    or srv.proc.poll() is not None, RELOAD_TIMEOUT_S)
                    if count_in_log(srv, "Reload complete") <= before:
                        raise RuntimeError(f"reload {i+1}: no 'Reload complete' (ok={ok})\n" + srv.log_tail())
                elif name == "gunicorn":
                    old = children(srv.pid)
                    before = count_in_log(srv, "Application startup complete")
                    os.kill(srv.pid, signal.SIGHUP)
                    ok = wait_until(lambda: count_in_log(srv, "Application startup complete") >= before + args.workers
                                    and not (children(srv.pid) & old), RELOAD_TIMEOUT_S)
                    if not ok:
                        raise RuntimeError(f"reload {i+1}: new workers not up / old not gone in "
                                           f"{RELOAD_TIMEOUT_S:.0f} s\n" + srv.log_tail())
                else:  # uvicorn: stop and start again on the same port
                    os.kill(srv.pid, signal.SIGTERM)
                    try:
                        rc = srv.proc.wait(timeout=args.stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        # what docker stop / systemd do after their grace period
                        rc = "SIGKILL"
                        res.killed += 1
                        log(f"{name}: master not gone {args.stop_timeout_s:g} s after SIGTERM: SIGKILL")
                    if rc != 0:
                        res.problems.append(f"reload {i+1}: master exit {rc}")
                    srv.close()
                    srv = hb.Server(spec, port, logdir, f"gen{i+1}").start()
                    servers.append(srv)
                    srv.wait_healthy()
                if srv.proc.poll() is not None:
                    raise RuntimeError(f"{name} exited during reload {i+1}\n" + srv.log_tail())
                ms = (time.monotonic() - t0) * 1000.0
                res.reload_ms.append(ms)
                res.done += 1
                log(f"{name}: reload {i+1}/{args.reloads} done in {ms:.0f} ms")
                time.sleep(args.spacing_s)
        except Exception as e:  # stop reloading, but still count what the load saw
            log(f"{name}: reload error: {e}")
            res.problems.append(f"reload {res.done + 1}: {e}".replace("\n", " | ")[:1500])
        log(f"{name}: reloads over; waiting for the load to end "
            f"({max(0.0, t_end - time.monotonic()):.0f} s left)")
        r = load.result()
        res.load_s = duration_ms / 1000.0
        res.sent, res.failed, res.refused = r["sent"], r["failed"], r["refused"]
        res.n5xx = hb.count_5xx(r)
        res.status = r.get("status", {})
        res.errors = r.get("errors", {})
        res.first_errors = r.get("first_errors", [])[:5]
        log(f"{name}: sent {res.sent} failed {res.failed} 5xx {res.n5xx} refused {res.refused} "
            f"errors {res.errors}")
        if res.failed or res.n5xx:
            res.problems.append(f"failed={res.failed} 5xx={res.n5xx} status={res.status} "
                                f"errors={res.errors} first_errors={res.first_errors}")
    finally:
        if load is not None:
            load.kill()
        for s in servers:
            res.log_excerpts += [f"[{s.log_path.name}] {l}" for l in hb.interesting_log_lines(s.log_text())]
            s.close()


def fmt(v, nd=0) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def build_table(results: list[Res]) -> str:
    header = ["", *[r.name for r in results]]

    def row(label, f):
        return [label] + [f(r) for r in results]

    rows = [
        row("reloads done", lambda r: f"{r.done} / {r.wanted}"),
        row("requests sent", lambda r: fmt(r.sent)),
        row("**failed** (sent, no complete response)", lambda r: f"**{fmt(r.failed)}**"),
        row("5xx responses", lambda r: fmt(r.n5xx)),
        row("refused connects (retried, not sent)", lambda r: fmt(r.refused)),
        row("failed per reload done",
            lambda r: f"{r.failed / r.done:.1f}" if r.failed is not None and r.done else "—"),
        row("time per reload, median (ms)",
            lambda r: fmt(statistics.median(r.reload_ms), 0) if r.reload_ms else "—"),
        row("time per reload, min – max (ms)",
            lambda r: f"{min(r.reload_ms):.0f} – {max(r.reload_ms):.0f}" if r.reload_ms else "—"),
        row("reloads where the old server needed SIGKILL", lambda r: fmt(r.killed)),
        row("failure kinds", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.errors.items())
                                                 if v and k != "connect_refused") or "—" if r.sent is not None else "—"),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(results)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def goal_line(results: list[Res]) -> str:
    cur = next((r for r in results if r.name == "curfew"), None)
    if cur is None or cur.failed is None:
        return "- — : curfew: zero failed requests across reloads (not measured)"
    ok = cur.failed == 0 and cur.n5xx == 0 and cur.done == cur.wanted
    others = ", ".join(f"{r.name} {fmt(r.failed)}" for r in results if r.name != "curfew")
    return (f"- {'PASS' if ok else 'FAIL'}: curfew: zero failed requests across reloads — curfew failed "
            f"{cur.failed}, 5xx {cur.n5xx} over {cur.done} reloads; others failed: {others or 'n/a'}")


def render_section(results, table, args, cmdline, mach, vers) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## Reload benchmark: failed requests during repeated reloads under load",
        "",
        "Goal: curfew: zero failed requests across reloads.",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}",
        f"- command: `{cmdline}`",
        f"- versions: curfew {vers.get('curfew')}, uvicorn {vers.get('uvicorn')}, "
        f"gunicorn {vers.get('gunicorn')}, uvicorn-worker {vers.get('uvicorn-worker')}, "
        f"fastapi {vers.get('fastapi')}, python {vers.get('python')}",
        f"- {args.workers} workers per server; load: `curfew-load {' '.join('--path ' + shlex.quote(p) for p in args.paths)} "
        f"--connections {args.connections} --duration-ms {int(args.load_duration_s * 1000)} --timeout-ms {args.timeout_ms}`, "
        f"started before the first reload, ending after the last; {args.reloads} reloads, "
        f"{args.spacing_s:g} s between the end of one and the next",
        f"- reload: curfew = SIGHUP (done at its \"Reload complete\" log line); gunicorn = SIGHUP to the "
        "master (done when N new workers logged \"Application startup complete\" and the old ones are gone); "
        f"uvicorn = SIGTERM, wait for exit (SIGKILL after {args.stop_timeout_s:g} s, as docker stop does), start again on the same port (done when /health answers)",
        f"- load average at the start: {hb.LOADAVG_AT_START}",
        "",
        table,
        "",
        goal_line(results),
    ]
    parts += notes_block(results)
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


def notes_block(results, cut: int = 1500, excerpts: int = 12) -> list[str]:
    """The section's notes: each result's problems (cut to `cut` characters)
    and its first `excerpts` WARN/ERROR log lines; nothing when there are none."""
    notes = []
    for r in results:
        notes += [f"- {r.name}: {p}".replace("\n", " | ")[:cut] for p in r.problems]
        notes += [f"- {r.name} log: `{l.strip()[:300]}`" for l in r.log_excerpts[:excerpts]]
    return ["", "Notes (problems, log lines with WARN/ERROR):", ""] + notes if notes else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reloads", type=int, default=10, help="reloads per server (default 10)")
    ap.add_argument("--workers", type=int, default=4, help="worker processes per server (default 4)")
    ap.add_argument("--spacing", dest="spacing_s", type=float, default=1.5,
                    help="seconds between the end of one reload and the next (default 1.5)")
    ap.add_argument("--load-duration", dest="load_duration_s", type=float, default=None,
                    help="seconds of load per server (default 10 + 8 × reloads); must cover all reloads")
    ap.add_argument("--min-tail", dest="min_tail_s", type=float, default=3.0,
                    help="no reload starts less than this many seconds before the load ends (default 3)")
    ap.add_argument("--stop-timeout", dest="stop_timeout_s", type=float, default=10.0,
                    help="uvicorn: SIGKILL the old server if it has not exited this long after "
                         "SIGTERM (docker stop's default grace period; default 10)")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--path", dest="paths", action="append",
                    help="load mix (default /plain:20 and /sleep?ms=300:1)")
    ap.add_argument("--timeout-ms", type=int, default=20000, help="curfew-load per-request timeout")
    ap.add_argument("--servers", default="curfew,gunicorn,uvicorn",
                    help="comma-separated subset of curfew,gunicorn,uvicorn")
    ap.add_argument("--venv", help="Python venv with the servers (default .venv or $CURFEW_VENV)")
    ap.add_argument("--build", action="store_true", help="run `cargo build --release --features dev-tools` first")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = ap.parse_args()
    if not args.paths:
        args.paths = ["/plain:20", "/sleep?ms=300:1"]
    if args.load_duration_s is None:
        args.load_duration_s = 10.0 + 8.0 * args.reloads
    hb.LOADAVG_AT_START = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/reload_bench.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])

    signal.signal(signal.SIGTERM, hb._on_signal)
    signal.signal(signal.SIGINT, hb._on_signal)
    hb.become_subreaper()

    if args.build:
        subprocess.run(["cargo", "build", "--release", "--features", "dev-tools"], cwd=hb.REPO, check=True)
    curfew_bin = hb.REPO / "target" / "release" / "curfew"
    load_bin = hb.REPO / "target" / "release" / "curfew-load"
    for b in (curfew_bin, load_bin):
        if not b.exists():
            sys.exit(f"{b} missing: run `cargo build --release --features dev-tools` (or pass --build)")
    vbin = hb.find_venv(args.venv) / "bin"
    n = str(args.workers)
    logdir = Path(tempfile.mkdtemp(prefix="curfew-reload-bench-"))
    log(f"server logs in {logdir}")

    specs = {
        "curfew": hb.ServerSpec("curfew", lambda p: [
            str(curfew_bin), "serve", "-b", f"127.0.0.1:{p}", "-w", n, "--worker-concurrency", "64",
            "--ready-path", "/health", "--control-socket", str(logdir / f"c-{p}.sock"), "--",
            str(vbin / "uvicorn"), "app:app", "--fd", "3", "--no-access-log", "--log-level", "warning"]),
        "gunicorn": hb.ServerSpec("gunicorn", lambda p: [
            str(vbin / "gunicorn"), "-w", n, "-k", "uvicorn_worker.UvicornWorker",
            "--bind", f"127.0.0.1:{p}", "--no-control-socket", "app:app"]),
        "uvicorn": hb.ServerSpec("uvicorn", lambda p: [
            str(vbin / "uvicorn"), "app:app", "--workers", n, "--host", "127.0.0.1", "--port", str(p),
            "--no-access-log", "--log-level", "warning"]),
    }
    results: list[Res] = []
    t_start = time.monotonic()
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        res = Res(name)
        results.append(res)
        try:
            run_one(name, specs[name], args, logdir, load_bin, res)
        except Exception as e:  # record it and go on with the next server
            log(f"{name}: error: {e}")
            res.problems.append(f"error: {e}".replace("\n", " | ")[:2000])
        finally:
            hb.kill_all_sessions()
    log(f"done in {time.monotonic() - t_start:.0f} s")

    table = build_table(results)
    print(table)
    print()
    print(goal_line(results))
    for r in results:
        for p in r.problems:
            print(f"- {r.name}: {p}")
    if args.write:
        hb.write_results(render_section(results, table, args, cmdline, hb.machine_info(),
                                        hb.versions(vbin / "python", curfew_bin)),
                         SECTION_BEGIN, SECTION_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
