#!/usr/bin/env python3
"""Restart benchmark: failed requests and refused connections while the
server itself is replaced (a new version of the server, not of the app),
under the same keep-alive load.

The FastAPI example (examples/fastapi_app, `app:app`) with N workers, under
curfew-load with exact accounting, restarted --restarts times per setup:

  curfew-activated  `systemctl restart` with socket activation: this script
                    holds the listening socket (as a .socket unit does) and
                    starts curfew with it (LISTEN_FDS=1, LISTEN_FDNAMES=web,
                    LISTEN_PID via `exec` in bash); a restart is SIGTERM, wait
                    for the exit, start again with the same socket.
  curfew-upgrade    SIGUSR2 to curfew (started from a copy of the binary): it
                    starts the binary at its path with its sockets; done when
                    the old process has exited and the new one answers.
  gunicorn-upgrade  gunicorn's documented binary upgrade: USR2 to the master
                    (a new master with the inherited socket), wait until its
                    N workers are up, WINCH to the old master (its workers
                    stop gracefully), QUIT to the old master.
  uvicorn-restart   SIGTERM, wait for the exit, start again on the same port
                    (no socket is kept: what a plain restart does).
  granian-restart   the same with granian (when the venv has it).

Reported per setup: restarts done, requests sent, failed (sent, no complete
response), 5xx, refused connects (curfew-load retries them; a client without
retries sees an error), time per restart. (No CPU per request: the processes
of the generations a restart replaced are gone before they can be read.)
Reuses the helpers of bench/http_bench.py and bench/reload_bench.py.

    python3 bench/restart_bench.py
    python3 bench/restart_bench.py --setups curfew-upgrade,gunicorn-upgrade --restarts 3
    python3 bench/restart_bench.py --write    # record it in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench as hb  # noqa: E402  (Server, Load, cleanup, /proc readers, RESULTS.md writer)
import reload_bench as rb  # noqa: E402  (Res, table formatting, log counting, waiting)

SECTION_BEGIN = "<!-- restart_bench:begin -->"
SECTION_END = "<!-- restart_bench:end -->"
STEP_TIMEOUT_S = 60.0
log = hb.log

SETUPS = ["curfew-activated", "curfew-upgrade", "gunicorn-upgrade", "uvicorn-restart", "granian-restart"]


def alive(pid: int) -> bool:
    p = hb.proc_info(pid)
    return p is not None and p.state != "Z"


def env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in hb.STRIP_ENV_EXACT and not k.startswith(hb.STRIP_ENV_PREFIXES)}


class Proc:
    """A server process started by this script (a session of its own, logs
    appended to one file per setup), possibly replaced by a process it
    started itself (an upgrade)."""

    def __init__(self, argv: list[str], log_path: Path, stdin=subprocess.DEVNULL):
        self.log_path = log_path
        logf = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, cwd=hb.APP_DIR, env=env(), stdin=stdin, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        hb._SESSIONS.add(self.proc.pid)
        hb._POPEN_PIDS.add(self.proc.pid)
        self.pid = self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_gone(self, pid: int, timeout: float) -> bool:
        """Waits for `pid` to exit (our child, or an orphan we adopted as
        subreaper: reaped here)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pid == self.proc.pid and self.proc.poll() is not None:
                return True
            hb.reap_orphans()
            if not alive(pid):
                return True
            time.sleep(0.01)
        return False


def wait_healthy(port: int, timeout: float = hb.HEALTH_TIMEOUT_S) -> None:
    if not rb.wait_until(lambda: hb.health_ok(port), timeout):
        raise RuntimeError(f"no /health on :{port} within {timeout:.0f} s")


def run_setup(name: str, args, tmp: Path, load_bin: Path, vbin: Path, curfew_bin: Path,
              res: rb.Res) -> None:
    port = hb.free_port()
    n = str(args.workers)
    res.wanted = args.restarts
    logp = tmp / f"{name}.log"
    duration_ms = int(args.load_duration_s * 1000)
    uvicorn_fd = [str(vbin / "uvicorn"), "app:app", "--fd", "3", "--no-access-log", "--log-level", "warning"]
    holder: socket.socket | None = None
    procs: list[Proc] = []
    seen: set[int] = set()

    def curfew_argv(program: str, extra: list[str]) -> list[str]:
        return [program, "serve", "-b", f"127.0.0.1:{port}", "-w", n, "--worker-concurrency", "64",
                "--ready-path", "/health", "--drain-delay", "0",
                "--control-socket", str(tmp / f"c-{name}.sock"), *extra, "--", *uvicorn_fd]

    def start() -> Proc:
        if name == "curfew-activated":
            argv = ["bash", "-c", 'exec 3<&0 </dev/null; export LISTEN_PID=$$ LISTEN_FDS=1 '
                    'LISTEN_FDNAMES=web; exec "$0" "$@"', *curfew_argv(str(curfew_bin), [])]
            p = Proc(argv, logp, stdin=holder.fileno())
        elif name == "curfew-upgrade":
            p = Proc(curfew_argv(str(tmp / "curfew"), []), logp)
        elif name == "gunicorn-upgrade":
            p = Proc([str(vbin / "gunicorn"), "-w", n, "-k", "uvicorn_worker.UvicornWorker",
                      "--bind", f"127.0.0.1:{port}", "--pid", str(tmp / "gunicorn.pid"),
                      "--no-control-socket", "app:app"], logp)
        elif name == "uvicorn-restart":
            p = Proc([str(vbin / "uvicorn"), "app:app", "--workers", n, "--host", "127.0.0.1",
                      "--port", str(port), "--no-access-log", "--log-level", "warning"], logp)
        else:  # granian-restart
            p = Proc([str(vbin / "granian"), "--interface", "asgi", "--workers", n, "--host", "127.0.0.1",
                      "--port", str(port), "--no-ws", "app:app"], logp)
        procs.append(p)
        return p

    if name == "curfew-activated":
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen(2048)
        holder.set_inheritable(True)
    if name == "curfew-upgrade":
        shutil.copy2(curfew_bin, tmp / "curfew")

    load = None
    try:
        cur = start()
        main_pid = cur.pid
        wait_healthy(port)
        load = hb.Load(load_bin, port, args.paths, args.connections, duration_ms, args.timeout_ms, tmp).start()
        t_end = load.wait_started() + duration_ms / 1000.0
        time.sleep(args.spacing_s)
        for i in range(args.restarts):
            if time.monotonic() + args.min_tail_s > t_end:
                res.problems.append(f"load ended before all restarts: {res.done} done (raise --load-duration)")
                break
            t0 = time.monotonic()
            if name == "curfew-upgrade":
                started = rb.count_in_log(cur, 'result="started"')
                os.kill(main_pid, signal.SIGUSR2)
                if not rb.wait_until(lambda: rb.count_in_log(cur, 'result="started"') > started, STEP_TIMEOUT_S):
                    raise RuntimeError("no upgrade started\n" + cur.log_text()[-3000:])
                line = [l for l in cur.log_text().splitlines() if 'result="started"' in l][-1]
                new = int(re.search(r" pid=(\d+)", line).group(1))
                if not cur.wait_gone(main_pid, STEP_TIMEOUT_S):
                    raise RuntimeError("the old curfew did not exit\n" + cur.log_text()[-3000:])
                main_pid = new
            elif name == "gunicorn-upgrade":
                ready = rb.count_in_log(cur, "Application startup complete")

                def masters() -> list[int]:
                    # "Listening at: http://127.0.0.1:P (PID)", one per master
                    return [int(m) for m in re.findall(r"Listening at: \S+ \((\d+)\)", cur.log_text())]

                known = set(masters()) | {main_pid}

                def new_master() -> int | None:
                    return next((p for p in reversed(masters()) if p not in known), None)

                os.kill(main_pid, signal.SIGUSR2)
                ok = rb.wait_until(lambda: rb.count_in_log(cur, "Application startup complete") >= ready + args.workers
                                   and new_master() is not None, STEP_TIMEOUT_S)
                if not ok:
                    raise RuntimeError("new gunicorn master not up\n" + cur.log_text()[-3000:])
                new = new_master()
                old_workers = rb.children(main_pid)
                os.kill(main_pid, signal.SIGWINCH)
                # gunicorn's arbiter ignores WINCH unless daemonized ("SIGWINCH
                # ignored. Not daemonized"): its old workers then meet QUIT.
                if not rb.wait_until(lambda: not (rb.children(main_pid) & old_workers), args.winch_wait_s):
                    note = (f"WINCH did not stop the old workers within {args.winch_wait_s:g} s "
                            "(gunicorn ignores it when not daemonized); QUIT went to the old master with its workers")
                    if note not in res.problems:
                        res.problems.append(note)
                os.kill(main_pid, signal.SIGQUIT)
                if not cur.wait_gone(main_pid, STEP_TIMEOUT_S):
                    raise RuntimeError("the old gunicorn master did not exit")
                main_pid = new
            else:  # a plain restart: stop, wait, start (curfew-activated keeps the socket)
                os.kill(main_pid, signal.SIGTERM)
                if not cur.wait_gone(main_pid, args.stop_timeout_s):
                    os.kill(main_pid, signal.SIGKILL)
                    res.killed += 1
                    cur.wait_gone(main_pid, 5)
                cur = start()
                main_pid = cur.pid
                wait_healthy(port)
            seen.add(main_pid)
            ms = (time.monotonic() - t0) * 1000.0
            res.reload_ms.append(ms)
            res.done += 1
            log(f"{name}: restart {i + 1}/{args.restarts} done in {ms:.0f} ms")
            time.sleep(args.spacing_s)
        r = load.result()
        res.sent, res.failed, res.refused = r["sent"], r["failed"], r["refused"]
        res.n5xx = hb.count_5xx(r)
        res.status, res.errors = r.get("status", {}), r.get("errors", {})
        res.first_errors = r.get("first_errors", [])[:5]
        log(f"{name}: sent {res.sent} failed {res.failed} 5xx {res.n5xx} refused {res.refused}")
    finally:
        if load is not None:
            load.kill()
        for p in procs:
            res.log_excerpts += [f"[{name}] {l}" for l in hb.interesting_log_lines(p.log_text())][:6]
            hb.kill_session(p.pid)
        for pid in seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        hb.reap_orphans()
        if holder is not None:
            holder.close()


def build_table(results: list[rb.Res]) -> str:
    header = ["", *[r.name for r in results]]

    def row(label, f):
        return [label] + [f(r) for r in results]

    rows = [
        row("restarts done", lambda r: f"{r.done} / {r.wanted}"),
        row("requests sent", lambda r: rb.fmt(r.sent)),
        row("**failed** (sent, no complete response)", lambda r: f"**{rb.fmt(r.failed)}**"),
        row("5xx responses", lambda r: rb.fmt(r.n5xx)),
        row("**refused connects** (retried by the load)", lambda r: f"**{rb.fmt(r.refused)}**"),
        row("time per restart, median (ms)",
            lambda r: rb.fmt(statistics.median(r.reload_ms), 0) if r.reload_ms else "—"),
        row("old server SIGKILLed", lambda r: rb.fmt(r.killed)),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(results)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_section(results, table, args, cmdline, mach, vers) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## Restart benchmark: replacing the server itself under load",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}; "
        "shared with other builds and tests while it ran: times are indicative",
        f"- command: `{cmdline}`",
        f"- versions: curfew {vers.get('curfew')}, uvicorn {vers.get('uvicorn')}, gunicorn {vers.get('gunicorn')}, "
        f"uvicorn-worker {vers.get('uvicorn-worker')}, granian {vers.get('granian')}, python {vers.get('python')}",
        f"- {args.workers} workers; load: `curfew-load {' '.join('--path ' + shlex.quote(p) for p in args.paths)} "
        f"--connections {args.connections}` (keep-alive), {args.restarts} restarts, {args.spacing_s:g} s apart",
        "- curfew-activated: the script holds the socket (a .socket unit), SIGTERM + start again with "
        "LISTEN_FDS; curfew-upgrade: SIGUSR2 (done when the old process exited); gunicorn-upgrade: "
        "USR2, N new workers up, WINCH, QUIT to the old master; uvicorn/granian: SIGTERM, exit, start",
        f"- load average at the start: {hb.LOADAVG_AT_START}",
        "",
        table,
    ]
    parts += rb.notes_block(results, cut=1000, excerpts=6)
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spacing", dest="spacing_s", type=float, default=2.0)
    ap.add_argument("--load-duration", dest="load_duration_s", type=float, default=None,
                    help="seconds of load per setup (default 10 + 10 × restarts)")
    ap.add_argument("--min-tail", dest="min_tail_s", type=float, default=3.0)
    ap.add_argument("--stop-timeout", dest="stop_timeout_s", type=float, default=10.0)
    ap.add_argument("--winch-wait", dest="winch_wait_s", type=float, default=5.0,
                    help="gunicorn: seconds to wait for WINCH to stop the old workers before QUIT")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--path", dest="paths", action="append")
    ap.add_argument("--timeout-ms", type=int, default=20000)
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--venv")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = ap.parse_args()
    args.paths = args.paths or ["/plain:20", "/sleep?ms=1000:1"]
    if args.load_duration_s is None:
        args.load_duration_s = 10.0 + 10.0 * args.restarts
    hb.LOADAVG_AT_START = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/restart_bench.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    signal.signal(signal.SIGTERM, hb._on_signal)
    signal.signal(signal.SIGINT, hb._on_signal)
    hb.become_subreaper()
    curfew_bin = hb.REPO / "target" / "release" / "curfew"
    load_bin = hb.REPO / "target" / "release" / "curfew-load"
    for b in (curfew_bin, load_bin):
        if not b.exists():
            sys.exit(f"{b} missing: run `cargo build --release --features dev-tools`")
    venv = hb.find_venv(args.venv)
    vbin = venv / "bin"
    tmp = Path(tempfile.mkdtemp(prefix="curfew-restart-bench-"))
    log(f"logs in {tmp}")
    results: list[rb.Res] = []
    for name in [s.strip() for s in args.setups.split(",") if s.strip()]:
        if name == "granian-restart" and not (vbin / "granian").exists():
            log("granian is not in the venv: skipped")
            continue
        res = rb.Res(name)
        results.append(res)
        try:
            run_setup(name, args, tmp, load_bin, vbin, curfew_bin, res)
        except Exception as e:
            log(f"{name}: error: {e}")
            res.problems.append(f"error: {e}".replace("\n", " | ")[:2000])
        finally:
            hb.kill_all_sessions()
    table = build_table(results)
    print(table)
    if args.write:
        section = render_section(results, table, args, cmdline, hb.machine_info(),
                                 hb.versions(venv / "bin" / "python", curfew_bin))
        hb.write_results(section, SECTION_BEGIN, SECTION_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
