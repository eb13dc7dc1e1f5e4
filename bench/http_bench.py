#!/usr/bin/env python3
"""HTTP benchmark: curfew (+ uvicorn workers) against gunicorn, uvicorn and granian.

Runs the same FastAPI app (examples/fastapi_app, `app:app`) under each server,
with the same number of worker processes, and measures on this machine:

  1. throughput and latency on /plain (curfew-load, after a warm-up run);
  2. failed requests across a SIGTERM + restart under load (a deploy);
  3. time from SIGTERM to exit when idle (median of several runs);
  4. RSS of the master process, and of the master plus all its descendants.

Stdlib only (Python >= 3.11). See bench/README.md.

    python3 bench/http_bench.py            # print the table
    python3 bench/http_bench.py --write    # ... and record it in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import datetime as _dt
import http.client
import json
import os
import platform
import re
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
APP_DIR = REPO / "examples" / "fastapi_app"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
SECTION_BEGIN = "<!-- http_bench:begin -->"
SECTION_END = "<!-- http_bench:end -->"

LOADAVG_AT_START = "?"
HEALTH_POLL_S = 0.020
HEALTH_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 60.0  # longest we wait for a master to exit after SIGTERM

# Environment variables stripped from every server's environment: the worker
# count must come from the command line only, and nothing else may leak in.
STRIP_ENV_EXACT = {"WEB_CONCURRENCY", "PORT", "GUNICORN_CMD_ARGS"}
STRIP_ENV_PREFIXES = ("CURFEW_", "UVICORN_", "GRANIAN_")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# process bookkeeping (/proc)
# --------------------------------------------------------------------------

@dataclass
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str


def proc_info(pid: int) -> ProcInfo | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parens: split after the last ')'
    rest = data[data.rindex(")") + 2:].split()
    return ProcInfo(pid=pid, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]))


def all_procs() -> list[ProcInfo]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = proc_info(int(name))
            if info is not None:
                out.append(info)
    return out


def descendants(root: int, procs: list[ProcInfo] | None = None) -> list[int]:
    procs = procs if procs is not None else all_procs()
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0  # gone, or a kernel thread / zombie without VmRSS


CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def cpu_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    rest = data[data.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime + stime


def wait_for_quiet(max_wait_s: float, threshold: float) -> float:
    """Wait (at most max_wait_s) until the machine has been below `threshold`
    (fraction of all CPUs) busy for 2 s in a row: other people's builds and
    test runs on a 2-CPU machine swamp a throughput run. Returns the busy
    fraction of the last second."""
    deadline = time.monotonic() + max_wait_s
    quiet_streak, frac = 0, 0.0
    b0, t0 = cpu_busy_s(), time.monotonic()
    while True:
        time.sleep(1.0)
        b1, t1 = cpu_busy_s(), time.monotonic()
        frac = (b1 - b0) / ((t1 - t0) * NCPU)
        b0, t0 = b1, t1
        quiet_streak = quiet_streak + 1 if frac < threshold else 0
        if quiet_streak >= 2 or time.monotonic() >= deadline:
            return frac


def session_members(sid: int, alive_only: bool = True) -> list[int]:
    return [p.pid for p in all_procs() if p.sid == sid and not (alive_only and p.state == "Z")]


def become_subreaper() -> None:
    """Orphaned server processes are re-parented to us (not to init), so that
    cleanup can find, kill and reap every one of them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception as e:  # not fatal: session-id based cleanup still works
        log(f"warning: could not become a child subreaper: {e}")


# Every server session we started; killed on exit whatever happens.
_SESSIONS: set[int] = set()
_POPEN_PIDS: set[int] = set()


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session `sid` (the server master and all
    its children, even those in process groups of their own), plus any orphan
    that was re-parented to us, then reap what we can."""
    for _ in range(50):  # bounded: forks during the kill are picked up next round
        victims = set(session_members(sid))
        me = os.getpid()
        for p in all_procs():
            if p.ppid == me and p.pid not in _POPEN_PIDS and p.state != "Z":
                victims.add(p.pid)
                victims.update(descendants(p.pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        reap_orphans()
        if not victims:
            break
        time.sleep(0.02)
    _SESSIONS.discard(sid)


def reap_orphans() -> None:
    me = os.getpid()
    for p in all_procs():
        if p.ppid == me and p.pid not in _POPEN_PIDS:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)


def kill_all_sessions() -> None:
    for sid in list(_SESSIONS):
        kill_session(sid)


atexit.register(kill_all_sessions)


def _on_signal(signum, _frame):
    kill_all_sessions()
    sys.exit(128 + signum)


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------

@dataclass
class ServerSpec:
    name: str
    argv: Callable[[int], list[str]]  # port -> command line
    cwd: Path = APP_DIR


class Server:
    """One running server (its master process leads a new session)."""

    def __init__(self, spec: ServerSpec, port: int, logdir: Path, tag: str):
        self.spec, self.port = spec, port
        self.log_path = logdir / f"{spec.name}-{tag}-{port}.log"
        self.proc: subprocess.Popen | None = None
        self.sid: int | None = None

    def start(self) -> "Server":
        env = {
            k: v for k, v in os.environ.items()
            if k not in STRIP_ENV_EXACT and not k.startswith(STRIP_ENV_PREFIXES)
        }
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.spec.argv(self.port), cwd=self.spec.cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sid = self.proc.pid
        _SESSIONS.add(self.sid)
        _POPEN_PIDS.add(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> float:
        """Poll GET /health every 20 ms until it answers 200; returns seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode} before it was ready\n"
                    + self.log_tail())
            if health_ok(self.port):
                return time.monotonic() - t0
            time.sleep(HEALTH_POLL_S)
        raise RuntimeError(f"{self.spec.name} not healthy after {timeout:.0f} s\n" + self.log_tail())

    def sigterm_and_wait(self) -> tuple[int, float]:
        """SIGTERM to the master only (like a container runtime does); waits for
        the master to exit. Returns (exit code, ms from signal to exit)."""
        # Popen.wait(timeout=...) polls with sleeps of up to 50 ms, which would
        # swamp the measurement: wait on a pidfd (woken the moment the master
        # exits), then collect the status with a blocking waitpid.
        pidfd = None
        with contextlib.suppress(AttributeError, OSError):
            pidfd = os.pidfd_open(self.pid)
        t0 = time.perf_counter()
        os.kill(self.pid, signal.SIGTERM)
        try:
            if pidfd is not None:
                ready, _, _ = select.select([pidfd], [], [], EXIT_TIMEOUT_S)
                if not ready:
                    raise subprocess.TimeoutExpired(self.spec.argv(self.port), EXIT_TIMEOUT_S)
                rc = self.proc.wait()
            else:  # no pidfd: tight waitpid(WNOHANG) loop
                deadline = time.monotonic() + EXIT_TIMEOUT_S
                while (rc := self.proc.poll()) is None:
                    if time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(self.spec.argv(self.port), EXIT_TIMEOUT_S)
                    time.sleep(0.0005)
            elapsed_ms = (time.perf_counter() - t0) * 1000.0
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{self.spec.name} did not exit within {EXIT_TIMEOUT_S:.0f} s of SIGTERM\n"
                + self.log_tail())
        finally:
            if pidfd is not None:
                os.close(pidfd)
        return rc, elapsed_ms

    def leftovers(self) -> int:
        """Live (non-zombie) processes of this server's session other than the master."""
        return len([p for p in session_members(self.sid) if p != self.pid])

    def close(self) -> None:
        if self.sid is not None:
            kill_session(self.sid)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            _POPEN_PIDS.discard(self.proc.pid)
        with contextlib.suppress(Exception):
            self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        lines = self.log_text().splitlines()[-n:]
        return f"--- last {len(lines)} lines of {self.log_path} ---\n" + "\n".join(lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def health_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# load generator
# --------------------------------------------------------------------------

class Load:
    def __init__(self, load_bin: Path, port: int, paths: list[str], connections: int,
                 duration_ms: int, timeout_ms: int, workdir: Path):
        self.ready_file = workdir / f"load-ready-{port}-{time.monotonic_ns()}"
        self.argv = [str(load_bin), "--url", f"http://127.0.0.1:{port}"]
        for p in paths:
            self.argv += ["--path", p]
        self.argv += ["--connections", str(connections), "--duration-ms", str(duration_ms),
                      "--timeout-ms", str(timeout_ms), "--ready-file", str(self.ready_file)]
        self.limit_s = (duration_ms + timeout_ms) / 1000.0 + 30.0
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Load":
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True)
        _POPEN_PIDS.add(self.proc.pid)
        return self

    def wait_started(self, timeout: float = 10.0) -> float:
        """Wait until the first request succeeded (curfew-load's --ready-file)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.ready_file.exists():
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise RuntimeError(f"load did not get a first response within {timeout:.0f} s: "
                           f"{self.proc.poll()=}")

    def result(self) -> dict:
        try:
            out, err = self.proc.communicate(timeout=self.limit_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise RuntimeError(f"curfew-load did not finish in {self.limit_s:.0f} s\n{err}")
        finally:
            _POPEN_PIDS.discard(self.proc.pid)
            with contextlib.suppress(FileNotFoundError):
                self.ready_file.unlink()
        lines = [l for l in out.splitlines() if l.strip().startswith("{")]
        if self.proc.returncode not in (0, None) and not lines:
            raise RuntimeError(f"curfew-load exited {self.proc.returncode}: {err.strip()}")
        if not lines:
            raise RuntimeError(f"curfew-load printed no JSON; stderr: {err.strip()}")
        with contextlib.suppress(OSError):
            (self.ready_file.parent / "load-results.jsonl").open("a").write(
                json.dumps({"argv": self.argv, "result": json.loads(lines[-1])}) + "\n")
        return json.loads(lines[-1])

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc:
            _POPEN_PIDS.discard(self.proc.pid)

    def run(self) -> dict:
        self.start()
        try:
            return self.result()
        finally:
            self.kill()


def count_5xx(res: dict) -> int:
    return sum(n for code, n in res.get("status", {}).items() if str(code).startswith("5"))


def count_non2xx(res: dict) -> int:
    return sum(n for code, n in res.get("status", {}).items() if not str(code).startswith("2"))


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

@dataclass
class Result:
    name: str
    rps: float | None = None
    p50: float | None = None
    p99: float | None = None
    tp_bad: int | None = None  # failed + non-2xx in the throughput run
    tp_other_cpu: float | None = None  # % of the machine's CPU used by unrelated processes
    rss_master_mb: float | None = None
    rss_total_mb: float | None = None
    nprocs: int | None = None
    st_failed: int | None = None
    st_5xx: int | None = None
    st_refused: int | None = None
    st_sent: int | None = None
    st_exit_code: int | None = None
    st_exit_ms: float | None = None
    st_ready_again_ms: float | None = None
    st_errors: dict = field(default_factory=dict)
    st_first_errors: list = field(default_factory=list)
    idle_exit_ms: list[float] = field(default_factory=list)
    idle_exit_codes: list[int] = field(default_factory=list)
    idle_leftovers: int | None = None
    problems: list[str] = field(default_factory=list)
    log_excerpts: list[str] = field(default_factory=list)

    @property
    def idle_median(self) -> float | None:
        return statistics.median(self.idle_exit_ms) if self.idle_exit_ms else None


INTERESTING_LOG = re.compile(
    r"\bWARN(ING)?\b|\bERROR\b|CRITICAL|Traceback|panicked|forced|requests_aborted=[1-9]")


def interesting_log_lines(text: str, limit: int = 12) -> list[str]:
    lines = [l for l in text.splitlines() if INTERESTING_LOG.search(l)]
    return lines[:limit]


def bench_throughput(spec: ServerSpec, args, ctx, res: Result) -> None:
    port = free_port()
    with Server(spec, port, ctx.logdir, "throughput").start() as srv:
        boot = srv.wait_healthy()
        log(f"{spec.name}: healthy after {boot*1000:.0f} ms on :{port}; warm-up {args.warmup_s} s")
        Load(ctx.load_bin, port, ["/plain"], args.connections, int(args.warmup_s * 1000),
             args.timeout_ms, ctx.logdir).run()
        # Other people's builds and tests on a small machine swamp a throughput
        # run: wait for a quiet machine, measure how much CPU unrelated processes
        # took during the run, and run again (up to --retries times) if that was
        # more than --quiet-threshold; the run with the least interference counts.
        best: tuple[float, dict] | None = None
        for attempt in range(1 + max(0, args.retries)):
            if args.quiet_wait > 0:
                frac = wait_for_quiet(args.quiet_wait, args.quiet_threshold)
                if frac >= args.quiet_threshold:
                    log(f"{spec.name}: machine still {frac*100:.0f}% busy after waiting "
                        f"{args.quiet_wait:.0f} s for it to quiet down; measuring anyway")
            log(f"{spec.name}: throughput run {args.duration_s} s x {args.connections} connections"
                + (f" (attempt {attempt + 1})" if attempt else ""))
            tree0 = [srv.pid] + descendants(srv.pid)
            tree_cpu0 = sum(proc_cpu_s(p) for p in tree0)
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy0, wall0 = cpu_busy_s(), time.monotonic()
            r = Load(ctx.load_bin, port, ["/plain"], args.connections, int(args.duration_s * 1000),
                     args.timeout_ms, ctx.logdir).run()
            busy1, wall1 = cpu_busy_s(), time.monotonic()
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            tree_cpu1 = sum(proc_cpu_s(p) for p in tree0)
            load_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
            other = (busy1 - busy0) - (tree_cpu1 - tree_cpu0) - load_cpu
            other_pct = max(0.0, 100.0 * other / ((wall1 - wall0) * NCPU))
            log(f"{spec.name}: {r['rps']:.0f} rps; unrelated processes used {other_pct:.0f}% CPU")
            if best is None or other_pct < best[0]:
                best = (other_pct, r)
            if other_pct <= args.quiet_threshold * 100:
                break
        res.tp_other_cpu, r = best
        if res.tp_other_cpu > args.quiet_threshold * 100:
            res.problems.append(f"throughput run: unrelated processes used {res.tp_other_cpu:.0f}% "
                                "of the machine's CPU during it: its numbers are unreliable")
        res.rps = r["rps"]
        res.p50 = r["latency_ms"]["p50"]
        res.p99 = r["latency_ms"]["p99"]
        res.tp_bad = r["failed"] + count_non2xx(r)
        if res.tp_bad:
            res.problems.append(f"throughput run: {r['failed']} failed, status {r['status']}, "
                                f"errors {r['errors']}, first {r['first_errors'][:3]}")
        # RSS right after the throughput run
        procs = all_procs()
        tree = [srv.pid] + descendants(srv.pid, procs)
        res.rss_master_mb = rss_kb(srv.pid) / 1024.0
        res.rss_total_mb = sum(rss_kb(p) for p in tree) / 1024.0
        res.nprocs = len(tree)
        log(f"{spec.name}: {res.rps:.0f} rps p50 {res.p50} p99 {res.p99} ms "
            f"(other processes: {res.tp_other_cpu:.0f}% CPU); "
            f"RSS master {res.rss_master_mb:.1f} MB, tree {res.rss_total_mb:.1f} MB ({res.nprocs} procs)")


def bench_sigterm(spec: ServerSpec, args, ctx, res: Result) -> None:
    port = free_port()
    first = Server(spec, port, ctx.logdir, "sigterm-old").start()
    second: Server | None = None
    load: Load | None = None
    try:
        first.wait_healthy()
        load = Load(ctx.load_bin, port, args.sigterm_paths, args.sigterm_connections,
                    int(args.sigterm_duration_s * 1000), args.timeout_ms, ctx.logdir).start()
        t_load = load.wait_started()
        time.sleep(max(0.0, t_load + args.sigterm_at_s - time.monotonic()))
        log(f"{spec.name}: SIGTERM to master {first.pid} under load")
        rc, exit_ms = first.sigterm_and_wait()
        t_exit = time.monotonic()
        res.st_exit_code, res.st_exit_ms = rc, exit_ms
        second = Server(spec, port, ctx.logdir, "sigterm-new").start()
        second.wait_healthy()
        res.st_ready_again_ms = (time.monotonic() - t_exit) * 1000.0
        log(f"{spec.name}: old master exited rc={rc} after {exit_ms:.0f} ms; "
            f"new one healthy {res.st_ready_again_ms:.0f} ms after that")
        r = load.result()
        res.st_failed = r["failed"]
        res.st_5xx = count_5xx(r)
        res.st_refused = r["refused"]
        res.st_sent = r["sent"]
        res.st_errors = r.get("errors", {})
        res.st_first_errors = r.get("first_errors", [])[:5]
        log(f"{spec.name}: sent {r['sent']} failed {r['failed']} 5xx {res.st_5xx} "
            f"refused {r['refused']} errors {r['errors']}")
        if res.st_failed or res.st_5xx:
            res.problems.append(
                f"SIGTERM under load: failed={res.st_failed} 5xx={res.st_5xx} status={r['status']} "
                f"errors={res.st_errors} first_errors={res.st_first_errors}")
        if rc != 0:
            res.problems.append(f"SIGTERM under load: master exit code {rc}")
        res.log_excerpts += [f"[old] {l}" for l in interesting_log_lines(first.log_text())]
        res.log_excerpts += [f"[new] {l}" for l in interesting_log_lines(second.log_text())]
    finally:
        if load is not None:
            load.kill()
        first.close()
        if second is not None:
            second.close()


def bench_idle_exit(spec: ServerSpec, args, ctx, res: Result) -> None:
    leftovers = 0
    for i in range(args.idle_runs):
        port = free_port()
        with Server(spec, port, ctx.logdir, f"idle{i}").start() as srv:
            srv.wait_healthy()
            time.sleep(1.0)
            rc, ms = srv.sigterm_and_wait()
            # children still alive once the master is gone (orphans)
            left = srv.leftovers()
            leftovers = max(leftovers, left)
            res.idle_exit_ms.append(ms)
            res.idle_exit_codes.append(rc)
            if rc != 0:
                res.problems.append(f"idle exit run {i}: exit code {rc}")
    res.idle_leftovers = leftovers
    if leftovers:
        res.problems.append(f"idle exit: up to {leftovers} process(es) still alive after the master exited")
    log(f"{spec.name}: idle exit ms {[round(x) for x in res.idle_exit_ms]} "
        f"(median {res.idle_median:.0f}), codes {res.idle_exit_codes}")


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def fmt(v, digits=0, suffix="") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v}{suffix}"


def fmt_rc(rc: int | None) -> str:
    if rc is None:
        return "—"
    if rc < 0:
        try:
            return f"{rc} ({signal.Signals(-rc).name})"
        except ValueError:
            return str(rc)
    return str(rc)


def ratio(curfew: float | None, others: list[float | None], higher_is_better: bool) -> str:
    vals = [v for v in others if v is not None]
    if curfew is None or not vals:
        return "—"
    best = max(vals) if higher_is_better else min(vals)
    if best == 0:
        return "—"
    return f"{curfew / best:.2f}×"


def build_table(results: list[Result]) -> str:
    cur = next((r for r in results if r.name == "curfew"), None)
    others = [r for r in results if r.name != "curfew"]
    header = ["metric"] + [r.name for r in results] + ["curfew / best other"]

    def row(label, getter, digits=0, suffix="", ratio_hib: bool | None = None):
        cells = [label] + [fmt(getter(r), digits, suffix) if not callable(digits) else digits(getter(r))
                           for r in results]
        if ratio_hib is not None and cur is not None:
            cells.append(ratio(getter(cur), [getter(r) for r in others], ratio_hib))
        else:
            cells.append("")
        return cells

    rows = [
        row("/plain throughput (req/s)", lambda r: r.rps, 0, ratio_hib=True),
        row("/plain latency p50 (ms)", lambda r: r.p50, 2),
        row("/plain latency p99 (ms)", lambda r: r.p99, 2),
        row("/plain run: failed + non-2xx", lambda r: r.tp_bad),
        row("/plain run: CPU used by unrelated processes (%)", lambda r: r.tp_other_cpu, 0),
        row("SIGTERM+restart under load: requests sent", lambda r: r.st_sent),
        row("SIGTERM+restart under load: **failed**", lambda r: r.st_failed),
        row("SIGTERM+restart under load: 5xx", lambda r: r.st_5xx),
        row("SIGTERM+restart under load: refused connects", lambda r: r.st_refused),
        row("SIGTERM+restart under load: master exit code", lambda r: r.st_exit_code, fmt_rc),
        row("SIGTERM+restart under load: SIGTERM → exit (ms)", lambda r: r.st_exit_ms, 0),
        row("SIGTERM+restart under load: exit → healthy again (ms)", lambda r: r.st_ready_again_ms, 0),
        row("idle SIGTERM → exit, median (ms)", lambda r: r.idle_median, 0, ratio_hib=False),
        row("idle SIGTERM → exit, all runs (ms)",
            lambda r: " / ".join(f"{x:.0f}" for x in r.idle_exit_ms) or None),
        row("idle: processes left after master exit", lambda r: r.idle_leftovers),
        row("master RSS after /plain run (MB)", lambda r: r.rss_master_mb, 1),
        row("master + descendants RSS (MB)", lambda r: r.rss_total_mb, 1),
        row("processes (master + descendants)", lambda r: r.nprocs),
    ]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(c for c in r) + " |" for r in rows]
    return "\n".join(lines)


def goals(results: list[Result]) -> list[str]:
    cur = next((r for r in results if r.name == "curfew"), None)
    if cur is None:
        return []
    others = [r for r in results if r.name != "curfew"]
    out = []

    def mark(ok: bool | None) -> str:
        return "—" if ok is None else ("PASS" if ok else "FAIL")

    failing_others = [f"{r.name} {r.st_failed}" for r in others if r.st_failed]
    ok = None if cur.st_failed is None else (cur.st_failed == 0 and cur.st_5xx == 0)
    out.append(f"- {mark(ok)}: zero failed requests across SIGTERM + restart where the others fail some "
               f"— curfew failed {fmt(cur.st_failed)}, 5xx {fmt(cur.st_5xx)}; others failing: "
               f"{', '.join(failing_others) if failing_others else 'none'}")
    ok = None if cur.idle_median is None else cur.idle_median < 50.0
    out.append(f"- {mark(ok)}: idle SIGTERM → exit < 50 ms — curfew median {fmt(cur.idle_median, 0)} ms")
    best = max((r.rps for r in others if r.rps is not None), default=None)
    # granian serves HTTP from Rust; the others run the same uvicorn HTTP stack as curfew's workers
    uv_others = [r for r in others if r.name in ("gunicorn", "uvicorn") and r.rps is not None]
    uv_note = ""
    if uv_others and cur.rps is not None and any(r.name == "granian" for r in others):
        b = max(uv_others, key=lambda r: r.rps)
        uv_note = (f"; against the best server with uvicorn's HTTP stack ({b.name}, "
                   f"{b.rps:,.0f} req/s): {cur.rps / b.rps:.2f}×")
    ok = None if cur.rps is None or best is None else cur.rps >= 0.9 * best
    out.append(f"- {mark(ok)}: /plain throughput within 10% of the best of the others — curfew "
               f"{fmt(cur.rps, 0)} req/s vs best other {fmt(best, 0)} req/s "
               f"({ratio(cur.rps, [best], True)})" + uv_note)
    ok = None if cur.rss_master_mb is None else cur.rss_master_mb < 15.0
    out.append(f"- {mark(ok)}: master RSS < 15 MB — curfew {fmt(cur.rss_master_mb, 1)} MB")
    return out


def sh(argv: list[str], cwd: Path = REPO) -> str:
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return ""


def machine_info() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {"nproc": sh(["nproc"]), "model": model, "mem": mem, "kernel": platform.release()}


def versions(venv_python: Path, curfew_bin: Path) -> dict:
    code = ("import importlib.metadata as m\n"
            "for n in ('uvicorn','gunicorn','uvicorn-worker','granian','fastapi','uvloop','httptools'):\n"
            "    try: print(n, m.version(n))\n"
            "    except Exception: print(n, '-')\n")
    v = dict(line.split(" ", 1) for line in sh([str(venv_python), "-c", code]).splitlines() if " " in line)
    rev = sh(["git", "rev-parse", "--short", "HEAD"]) or "?"
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock"])
    v["curfew"] = rev + (" (+ uncommitted changes in src/)" if dirty else "")
    # the binary may predate the tree (others edit src/ concurrently): say so
    sources = [REPO / "Cargo.toml", REPO / "Cargo.lock"] + list((REPO / "src").rglob("*.rs"))
    newest = max((f.stat().st_mtime for f in sources if f.exists()), default=0.0)
    with contextlib.suppress(OSError):
        built = curfew_bin.stat().st_mtime
        stamp = _dt.datetime.fromtimestamp(built, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        v["curfew"] += f", binary built {stamp}"
        if newest > built:
            v["curfew"] += " (older than the latest change in src/: run with --build to measure the tree)"
    v["python"] = sh([str(venv_python), "-c", "import sys; print(sys.version.split()[0])"])
    return v


def render_section(results, table, args, cmdline, mach, vers, skipped) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## HTTP benchmark: curfew vs gunicorn / uvicorn / granian",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}",
        f"- command: `{cmdline}`",
        f"- versions: curfew {vers.get('curfew')}, uvicorn {vers.get('uvicorn')}, "
        f"gunicorn {vers.get('gunicorn')}, uvicorn-worker {vers.get('uvicorn-worker')}, "
        f"granian {vers.get('granian')}, fastapi {vers.get('fastapi')}, "
        f"uvloop {vers.get('uvloop')}, httptools {vers.get('httptools')}, python {vers.get('python')}",
        f"- workers: {args.workers} for every server; /plain: {args.connections} connections, "
        f"{args.duration_s:g} s after a {args.warmup_s:g} s warm-up; SIGTERM test: "
        f"{' + '.join(args.sigterm_paths)}, {args.sigterm_connections} connections, "
        f"{args.sigterm_duration_s:g} s, SIGTERM at {args.sigterm_at_s:g} s; idle exit: median of {args.idle_runs}",
    ]
    parts.append(f"- load average at the start: {LOADAVG_AT_START}; each throughput run waited up to "
                 f"{args.quiet_wait:g} s for other processes to use < {args.quiet_threshold*100:g}% of the CPUs, "
                 f"and was repeated (up to {args.retries} times) if they used more during it")
    if skipped:
        parts.append(f"- skipped: {'; '.join(skipped)}")
    parts += ["", table, "", "Goals for curfew:", ""] + goals(results)
    notes = []
    for r in results:
        for p in r.problems:
            notes.append(f"- {r.name}: {p}")
        for l in r.log_excerpts:
            notes.append(f"- {r.name} log: `{l.strip()[:300]}`")
    if notes:
        parts += ["", "Notes (problems seen, log lines with WARN/ERROR during the SIGTERM test):", ""] + notes
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


def write_results(section: str, begin: str = SECTION_BEGIN, end: str = SECTION_END) -> None:
    """Put `section` between the `begin` / `end` markers of RESULTS.md (each
    bench script has its own), or append it."""
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
    else:
        text = "# Benchmark results\n\nWritten by the scripts in `bench/`; see `bench/README.md`.\n\n"
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + section.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS_MD.write_text(text)
    log(f"wrote {RESULTS_MD}")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

@dataclass
class Ctx:
    logdir: Path
    load_bin: Path


def find_venv(arg: str | None) -> Path:
    venv = Path(arg or os.environ.get("CURFEW_VENV") or REPO / ".venv")
    if not (venv / "bin" / "python").exists():
        log(f"no venv at {venv}; creating it with scripts/python-env.sh")
        out = subprocess.run(["bash", str(REPO / "scripts" / "python-env.sh")], cwd=REPO,
                             env={**os.environ, "CURFEW_VENV": str(venv)},
                             capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            sys.exit(f"scripts/python-env.sh failed:\n{out.stderr}")
        venv = Path(out.stdout.strip().splitlines()[-1])
    return venv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4, help="worker processes for every server (default 4)")
    ap.add_argument("--connections", type=int, default=32, help="connections for the /plain run (default 32)")
    ap.add_argument("--duration", dest="duration_s", type=float, default=10.0,
                    help="seconds of the /plain run (default 10)")
    ap.add_argument("--warmup", dest="warmup_s", type=float, default=2.0, help="warm-up seconds (default 2)")
    ap.add_argument("--sigterm-connections", type=int, default=16)
    ap.add_argument("--sigterm-duration", dest="sigterm_duration_s", type=float, default=8.0)
    ap.add_argument("--sigterm-at", dest="sigterm_at_s", type=float, default=3.0,
                    help="seconds into the load at which SIGTERM is sent (default 3)")
    ap.add_argument("--sigterm-path", dest="sigterm_paths", action="append",
                    help="load mix for the SIGTERM test (default /plain:20 and /sleep?ms=1000:1)")
    ap.add_argument("--idle-runs", type=int, default=5)
    ap.add_argument("--retries", type=int, default=1,
                    help="extra throughput runs when unrelated processes used more than "
                         "--quiet-threshold of the CPU during one (default 1; the least disturbed run counts)")
    ap.add_argument("--quiet-wait", type=float, default=30.0,
                    help="before each throughput run, wait up to this many seconds for the machine "
                         "to be quiet (other processes' CPU below --quiet-threshold); 0 = don't wait")
    ap.add_argument("--quiet-threshold", type=float, default=0.10,
                    help="fraction of all CPUs counted as quiet (default 0.10)")
    ap.add_argument("--timeout-ms", type=int, default=20000, help="curfew-load per-request timeout")
    ap.add_argument("--servers", default="curfew,gunicorn,uvicorn,granian",
                    help="comma-separated subset of curfew,gunicorn,uvicorn,granian")
    ap.add_argument("--only", default="throughput,sigterm,idle",
                    help="comma-separated subset of throughput,sigterm,idle")
    ap.add_argument("--venv", help="Python venv with the servers (default .venv or $CURFEW_VENV)")
    ap.add_argument("--build", action="store_true", help="run `cargo build --release --features dev-tools` first")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = ap.parse_args()
    if not args.sigterm_paths:
        args.sigterm_paths = ["/plain:20", "/sleep?ms=1000:1"]
    global LOADAVG_AT_START
    LOADAVG_AT_START = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/http_bench.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    become_subreaper()

    if args.build:
        subprocess.run(["cargo", "build", "--release", "--features", "dev-tools"], cwd=REPO, check=True)
    curfew_bin = REPO / "target" / "release" / "curfew"
    load_bin = REPO / "target" / "release" / "curfew-load"
    for b in (curfew_bin, load_bin):
        if not b.exists():
            sys.exit(f"{b} missing: run `cargo build --release --features dev-tools` (or pass --build)")
    venv = find_venv(args.venv)
    vbin = venv / "bin"
    n = str(args.workers)

    specs = {
        "curfew": ServerSpec("curfew", lambda p: [
            str(curfew_bin), "serve", "-b", f"127.0.0.1:{p}", "-w", n, "--worker-concurrency", "64",
            "--ready-path", "/health", "--",
            str(vbin / "uvicorn"), "app:app", "--fd", "3", "--no-access-log", "--log-level", "warning"]),
        "gunicorn": ServerSpec("gunicorn", lambda p: [
            str(vbin / "gunicorn"), "-w", n, "-k", "uvicorn_worker.UvicornWorker",
            "--bind", f"127.0.0.1:{p}", "--no-control-socket", "--graceful-timeout", "30", "app:app"]),
        "uvicorn": ServerSpec("uvicorn", lambda p: [
            str(vbin / "uvicorn"), "app:app", "--workers", n, "--host", "127.0.0.1", "--port", str(p),
            "--no-access-log", "--log-level", "warning"]),
        "granian": ServerSpec("granian", lambda p: [
            str(vbin / "granian"), "--interface", "asgi", "--workers", n,
            "--host", "127.0.0.1", "--port", str(p), "app:app"]),
    }
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    skipped = []
    if "granian" in wanted and not (vbin / "granian").exists():
        wanted.remove("granian")
        skipped.append(f"granian (not installed in {venv}; `{vbin}/pip install granian` to include it)")
        log("granian not installed: skipping it")
    only = {s.strip() for s in args.only.split(",")}

    logdir = Path(tempfile.mkdtemp(prefix="curfew-http-bench-"))
    log(f"server logs in {logdir}")
    ctx = Ctx(logdir=logdir, load_bin=load_bin)
    results: list[Result] = []
    t_start = time.monotonic()
    for name in wanted:
        spec = specs[name]
        res = Result(name)
        results.append(res)
        for phase, fn in (("throughput", bench_throughput), ("sigterm", bench_sigterm),
                          ("idle", bench_idle_exit)):
            if phase not in only:
                continue
            try:
                fn(spec, args, ctx, res)
            except Exception as e:  # record and go on with the next measurement
                msg = f"{phase} benchmark error: {e}"
                log(f"{name}: {msg}")
                res.problems.append(msg.replace("\n", " | ")[:2000])
            finally:
                kill_all_sessions()
    log(f"done in {time.monotonic() - t_start:.0f} s")

    table = build_table(results)
    print(table)
    print()
    print("Goals for curfew:")
    print("\n".join(goals(results)))
    for r in results:
        for p in r.problems:
            print(f"- {r.name}: {p}")
    if args.write:
        mach = machine_info()
        vers = versions(vbin / "python", curfew_bin)
        write_results(render_section(results, table, args, cmdline, mach, vers, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
