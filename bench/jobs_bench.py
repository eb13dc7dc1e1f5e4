#!/usr/bin/env python3
"""Job benchmark: curfew's job processor (SQLite and PostgreSQL stores) against
RQ on Redis, on this machine, loopback only.

Measured:

  1. enqueue jobs/s: N no-op jobs, as fast as a few keep-alive clients
     (threads of this script) can send them: `POST /jobs` to curfew's admin
     address, `Queue.enqueue` for RQ; nothing processes them meanwhile;
  2. processing jobs/s of that backlog: curfew delivers each job as
     `POST /jobs/noop` to a no-op FastAPI handler (bench/jobs_app.py), RQ runs
     a no-op function (bench/rq_jobs.py); from the first job's start to the
     last one's finish, from the store's own timestamps;
  3. the same with a no-op command (`true`) per job instead of HTTP (curfew);
  4. latency into an idle processor: jobs enqueued one at a time, 20 ms apart;
     enqueue → start (the store's timestamps) and enqueue call → handler
     running (this script's clock before the call, the handler's time.time()).

Every curfew job is checked to have ended `succeeded` at its first attempt,
every RQ job `finished`; curfew's exit code and its WARN/ERROR log lines are
reported. Needs the venv of scripts/python-env.sh with bench/requirements.txt
installed (rq, redis); re-executes itself with the venv's python when the
current one lacks them. See bench/README.md.

    python3 bench/jobs_bench.py            # print the table
    python3 bench/jobs_bench.py --write    # ... and record it in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import http.client
import json
import math
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench as hb  # noqa: E402  (helpers: sessions, subreaper, cleanup, machine info)

BENCH_DIR = hb.BENCH_DIR
REPO = hb.REPO
SECTION_BEGIN = "<!-- jobs_bench:begin -->"
SECTION_END = "<!-- jobs_bench:end -->"
log = hb.log

DB_POLL_S = 0.1
DONE_TIMEOUT_S = 120.0  # longest we wait for a backlog to be processed
ADMIN_TIMEOUT_S = 30.0

COLS = ["curfew SQLite", "curfew PostgreSQL", "RQ Worker (fork)", "RQ SimpleWorker"]
RQ_CLASSES = {"RQ Worker (fork)": "rq.worker.Worker", "RQ SimpleWorker": "rq.worker.SimpleWorker"}


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

class Proc(hb.Server):
    """A process leading a new session (killed with its whole session at
    close), with extra environment variables."""

    def __init__(self, name: str, argv: list[str], logdir: Path, tag: str,
                 cwd: Path = BENCH_DIR, env: dict | None = None):
        super().__init__(hb.ServerSpec(name, lambda _p: argv, cwd), 0, logdir, tag)
        self.log_path = logdir / f"{name}-{tag}.log"
        self.extra_env = env or {}

    def start(self) -> "Proc":
        env = {k: v for k, v in os.environ.items()
               if k not in hb.STRIP_ENV_EXACT and not k.startswith(hb.STRIP_ENV_PREFIXES)}
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.spec.argv(0), cwd=self.spec.cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.sid = self.proc.pid
        hb._SESSIONS.add(self.sid)
        hb._POPEN_PIDS.add(self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def pct(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))]


def rates(starts_ms: list[float], finishes_ms: list[float]) -> tuple[float | None, float | None, float]:
    """(jobs/s from the first start to the last finish, jobs/s between the
    10% and the 90% finish (steady state), seconds first start → last finish)."""
    n = len(finishes_ms)
    if n < 2:
        return None, None, 0.0
    span = (max(finishes_ms) - min(starts_ms)) / 1000.0
    f = sorted(finishes_ms)
    a, b = int(0.1 * n), int(0.9 * n) - 1
    steady = (b - a) / ((f[b] - f[a]) / 1000.0) if f[b] > f[a] else None
    return (n / span if span > 0 else None), steady, span


_COMM_TRACKED = ("postgres", "redis-server")


def tracked_cpu_s() -> float:
    """CPU seconds (own + reaped children) of every process of our sessions
    and of the database servers (postgres, redis-server). Deltas of this are
    exact across processes that exit meanwhile: their time moves into their
    parent's cutime/cstime."""
    sids = set(hb._SESSIONS)
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        rest = data[data.rindex(")") + 2:].split()
        if int(rest[3]) in sids or comm in _COMM_TRACKED:
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total / hb.CLK_TCK


def split_cpu_s(main_pid: int | None) -> tuple[float, dict[int, int]]:
    """(CPU seconds of `main_pid` itself, without its children; {pid: CPU
    ticks} of every database server process, without its children): the
    parts of tracked_cpu_s() that say where the time goes. Children are left
    out so that the short-lived backends of this script's own psql polls
    (reaped by the postmaster) do not count as the store's work."""
    own = 0
    db: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        comm = data[data.index("(") + 1:data.rindex(")")]
        rest = data[data.rindex(")") + 2:].split()
        if comm in _COMM_TRACKED:
            db[int(name)] = int(rest[11]) + int(rest[12])
        elif main_pid is not None and int(name) == main_pid:
            own += int(rest[11]) + int(rest[12])
    return own / hb.CLK_TCK, db


class CpuWindow:
    """CPU used by the system under test (our sessions + DB servers) and by
    everything else during a window; with `main_pid` (curfew), also that
    process's own share and the database servers' share."""

    def __init__(self, reaped_children_are_system: bool = False, main_pid: int | None = None):
        # True when processes of the system under test that exit during the
        # window are reaped by this script (RQ burst workers): their CPU then
        # shows up in our children's rusage, not in any live process's
        # cutime. False when our only reaped children are our own pollers (psql).
        self.reaped = reaped_children_are_system
        self.main_pid = main_pid

    def __enter__(self):
        self.t0, self.busy0, self.mine0 = time.monotonic(), hb.cpu_busy_s(), tracked_cpu_s()
        self.split0 = split_cpu_s(self.main_pid)
        self.self0, self.kids0 = sum(os.times()[:2]), sum(os.times()[2:4])
        return self

    def __exit__(self, *exc):
        self.wall = time.monotonic() - self.t0
        self.system = tracked_cpu_s() - self.mine0
        own1, db1 = split_cpu_s(self.main_pid)
        self.main_s = own1 - self.split0[0]
        # Database processes alive at the end of the window (the store's
        # pooled connections, also those opened during it, the WAL writer,
        # ...), not the exited backends of this script's psql polls.
        db0 = self.split0[1]
        self.db_s = sum(t - db0.get(pid, 0) for pid, t in db1.items()) / hb.CLK_TCK
        own = sum(os.times()[:2]) - self.self0  # this script's polling
        kids = sum(os.times()[2:4]) - self.kids0
        if self.reaped:
            self.system += kids
        else:
            own += kids
        other = hb.cpu_busy_s() - self.busy0 - self.system - own
        self.other_pct = max(0.0, 100.0 * other / (self.wall * hb.NCPU)) if self.wall > 0 else 0.0


def http_json(port: int, method: str, path: str, body: dict | None = None,
              timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

@dataclass
class Col:
    name: str
    enqueue_rps: float | None = None
    proc_rps: float | None = None
    proc_steady: float | None = None
    proc_span_s: float | None = None
    cpu_per_1k: float | None = None
    cmd_rps: float | None = None
    cmd_steady: float | None = None
    cmd_cpu_per_1k: float | None = None
    lat_store_p50: float | None = None
    lat_store_p99: float | None = None
    lat_handler_p50: float | None = None
    lat_handler_p99: float | None = None
    checked: dict[str, list[int]] = field(default_factory=dict)  # run -> [succeeded, enqueued]
    other_cpu: dict[str, float] = field(default_factory=dict)  # run -> % of the machine
    problems: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# curfew
# --------------------------------------------------------------------------

@dataclass
class Store:
    kind: str  # "sqlite" | "pg"
    url: str
    schema: str = ""
    path: Path | None = None
    # One psql kept open for the polls of counts(): a psql (and a backend)
    # per poll cost ~0.1 CPU s a second, in the database's processes too.
    poller: "PsqlSession | None" = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        if self.poller is not None:
            self.poller.close()
            self.poller = None

    def reset(self) -> None:
        if self.kind == "pg":
            psql(self.url, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        else:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(self.path) + suffix).unlink()

    def rows(self) -> list[tuple]:
        """(id, state, attempt, created_at, started_at, finished_at) of every job; -1 for NULL."""
        q = ("SELECT id, state, attempt, created_at, coalesce(started_at, -1), "
             "coalesce(finished_at, -1) FROM {t} ORDER BY id")
        if self.kind == "pg":
            out = psql(self.url, q.format(t=f"{self.schema}.jobs"))
            rows = []
            for line in out.splitlines():
                f = line.split(",")
                rows.append((int(f[0]), f[1], int(f[2]), int(f[3]), int(f[4]), int(f[5])))
            return rows
        con = sqlite3.connect(str(self.path), timeout=10)
        try:
            return con.execute(q.format(t="jobs")).fetchall()
        finally:
            con.close()

    def counts(self) -> dict[str, int]:
        q = "SELECT state, count(*) FROM {t} GROUP BY state"
        if self.kind == "pg":
            if self.poller is None:
                self.poller = PsqlSession(self.url)
            out = self.poller.query(q.format(t=f"{self.schema}.jobs"))
            return {l.split(",")[0]: int(l.split(",")[1]) for l in out.splitlines() if "," in l}
        con = sqlite3.connect(str(self.path), timeout=10)
        try:
            return dict(con.execute(q.format(t="jobs")).fetchall())
        finally:
            con.close()


class PsqlSession:
    """One psql reading queries from a pipe: each answer ends at an echoed
    marker."""

    END = "__jobs_bench_end__"

    def __init__(self, url: str):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-At", "-F", ",", "-v", "ON_ERROR_STOP=1", "-d", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{sql};\n\\echo {self.END}\n")
        self.proc.stdin.flush()
        out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"psql session ended ({sql[:60]}): {err.strip()}")
            if line.rstrip("\n") == self.END:
                return "".join(out)
            out.append(line)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def psql(url: str, sql: str) -> str:
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", ",", "-v", "ON_ERROR_STOP=1",
                        "-d", url, "-c", sql], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed ({sql[:60]}): {r.stderr.strip()}")
    return r.stdout


def write_config(path: Path, ctx, store: Store, delivery: str, port: int, admin: int,
                 concurrency: int) -> None:
    uvicorn = str(ctx.vbin / "uvicorn")
    lines = [
        f"command = {json.dumps([uvicorn, 'jobs_app:app', '--fd', '3', '--no-access-log', '--log-level', 'warning'])}",
        f"workers = {ctx.args.app_workers}",
        f"worker_concurrency = {ctx.args.worker_concurrency}",
        f'bind = "127.0.0.1:{port}"',
        f'admin_bind = "127.0.0.1:{admin}"',
        f'control_socket = "{path.parent / (path.stem + ".sock")}"',
        'ready_path = "/ready"',
        'boot_timeout = "300s"',
        "",
        "[jobs]",
        f'store = "{store.url if store.kind == "pg" else "sqlite://" + str(store.path)}"',
    ]
    if store.kind == "pg":
        lines.append(f'pg_schema = "{store.schema}"')
    lines += ["", "[jobs.queues.default]", f"concurrency = {concurrency}"]
    if delivery == "command":
        lines.append('command = ["true"]')
    path.write_text("\n".join(lines) + "\n")


class Curfew:
    """One curfew with the no-op app, its workers held not-ready (so that the
    processor does not start) until open_gate()."""

    def __init__(self, ctx, store: Store, delivery: str, tag: str):
        if store.kind == "sqlite":  # a fresh file per run, kept for a post-mortem
            store = dataclasses.replace(store, path=ctx.logdir / f"jobs-{tag}.db")
        self.ctx, self.store, self.delivery, self.tag = ctx, store, delivery, tag
        self.port, self.admin = hb.free_port(), hb.free_port()
        self.gate = ctx.logdir / f"gate-{tag}"
        self.stamp_dir = ctx.logdir / f"stamps-{tag}"
        self.stamp_dir.mkdir()
        self.config = ctx.logdir / f"curfew-{tag}.toml"
        write_config(self.config, ctx, store, delivery, self.port, self.admin, ctx.args.queue_concurrency)
        self.proc = Proc("curfew", [str(ctx.curfew_bin), "serve", "--config", str(self.config)],
                         ctx.logdir, tag,
                         env={"JOBS_APP_GATE": str(self.gate), "JOBS_APP_STAMP_DIR": str(self.stamp_dir)})
        self.exit_code: int | None = None

    def start(self) -> "Curfew":
        self.store.reset()
        self.proc.start()
        self._wait(lambda: http_json(self.admin, "GET", "/healthz", timeout=1.0)[0] == 200, "admin /healthz")
        return self

    def _wait(self, cond, what: str, timeout: float = ADMIN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"curfew exited ({self.proc.proc.returncode}) while waiting for {what}\n"
                                   + self.proc.log_tail())
            with contextlib.suppress(OSError, http.client.HTTPException):
                if cond():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"curfew: no {what} within {timeout:.0f} s\n" + self.proc.log_tail())

    def open_gate(self) -> None:
        self.gate.touch()

    def wait_serving(self) -> None:
        self._wait(lambda: http_json(self.admin, "GET", "/readyz", timeout=1.0)[0] == 200, "/readyz 200")

    def wait_done(self, n: int, timeout: float = DONE_TIMEOUT_S) -> dict[str, int]:
        """Polls the store until n jobs are terminal; returns the state counts."""
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = self.store.counts()
            if sum(counts.get(s, 0) for s in ("succeeded", "dead", "cancelled")) >= n:
                return counts
            if not self.proc.alive():
                raise RuntimeError(f"curfew exited ({self.proc.proc.returncode}) with jobs left: {counts}\n"
                                   + self.proc.log_tail())
            time.sleep(DB_POLL_S)
        raise RuntimeError(f"jobs not done within {timeout:.0f} s: {counts}")

    def stop(self) -> None:
        self.store.close()
        if self.proc.alive():
            self.exit_code, _ = self.proc.sigterm_and_wait()
        self.proc.close()

    def stamps(self) -> dict[int, float]:
        out = {}
        for f in self.stamp_dir.glob("stamps-*.txt"):
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit():
                    out[int(parts[0])] = float(parts[1])
        return out


def timed_clients(n: int, threads: int, make_call: Callable[[int], Callable[[int], object]]
                  ) -> tuple[float, list, list[str]]:
    """Calls 0..n-1 spread over `threads` threads, thread k making its client
    with make_call(k) before the clock starts; each call returns an id or
    raises. Returns (seconds, ids, errors)."""
    ids: list = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        call = make_call(k)
        mine, errs = [], []
        barrier.wait()
        for i in range(k, n, threads):
            try:
                mine.append(call(i))
            except Exception as e:  # noqa: BLE001
                errs.append(f"{type(e).__name__}: {e}")
        with lock:
            ids.extend(mine)
            errors.extend(errs)

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join(timeout=600)
    return time.perf_counter() - t0, ids, errors


def curfew_enqueue(port: int, n: int, threads: int, kind: str = "noop") -> tuple[float, list[int], list[str]]:
    """n jobs over `threads` keep-alive connections; returns (seconds, ids, errors)."""
    def make_call(k: int) -> Callable[[int], int]:
        conn = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]
        bodies = {i: json.dumps({"queue": "default", "kind": kind, "payload": {"i": i}}).encode()
                  for i in range(k, n, threads)}

        def call(i: int) -> int:
            try:
                conn[0].request("POST", "/jobs", body=bodies[i], headers={"Content-Type": "application/json"})
                r = conn[0].getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                conn[0].close()
                conn[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                raise
            if r.status != 201:
                raise RuntimeError(f"{r.status} {data[:200]!r}")
            return json.loads(data)["id"]
        return call

    return timed_clients(n, threads, make_call)


def paced(n_warm: int, n: int, gap_s: float, send) -> tuple[dict, list[str]]:
    """Calls send() n_warm + n times, gap_s apart (from the previous start);
    returns ({id: client time before the call} of the n measured ones, errors)."""
    t_client: dict = {}
    errors: list[str] = []
    nxt = time.monotonic()
    for i in range(n_warm + n):
        nxt += gap_s
        t0 = time.time()
        try:
            jid = send()
            if i >= n_warm:
                t_client[jid] = t0
        except Exception as e:  # noqa: BLE001  record and go on
            errors.append(f"{type(e).__name__}: {e}")
        time.sleep(max(0.0, nxt - time.monotonic()))
    return t_client, errors


def check_rows(rows: list[tuple], ids: list[int], col: Col, what: str) -> list[tuple]:
    """Only the rows of `ids`; records how many succeeded at their first attempt."""
    want = set(ids)
    mine = [r for r in rows if r[0] in want]
    ok = [r for r in mine if r[1] == "succeeded"]
    retried = [r for r in ok if r[2] != 1]
    col.checked[what] = [len(ok), len(ids)]
    if len(ok) != len(ids) or len(mine) != len(ids):
        states: dict[str, int] = {}
        for r in mine:
            states[r[1]] = states.get(r[1], 0) + 1
        col.problems.append(f"{what}: {len(ids)} enqueued, {len(mine)} found in the store, "
                            f"{len(ok)} succeeded; states {states}")
    if retried:
        col.problems.append(f"{what}: {len(retried)} jobs succeeded only after more than one attempt "
                            f"(e.g. job {retried[0][0]} attempt {retried[0][2]})")
    return ok


def curfew_log_check(cf: Curfew, col: Col, what: str) -> None:
    if cf.exit_code not in (0, None):
        col.problems.append(f"{what}: curfew exited {hb.fmt_rc(cf.exit_code)} after SIGTERM")
    lines = hb.interesting_log_lines(cf.proc.log_text(), limit=20)
    col.log_lines += [f"[{what}] {l}" for l in lines]


def with_retries(ctx, col: Col, key: str, phase) -> None:
    """Runs phase(scratch_col, attempt) again (up to --retries times) while
    unrelated processes used more than 10% of the machine during its
    processing run; the least disturbed attempt's numbers count. Problems,
    log lines and checks of every attempt are kept."""
    best: Col | None = None
    for attempt in range(1 + max(0, ctx.args.retries)):
        if ctx.args.quiet_wait > 0:
            frac = hb.wait_for_quiet(ctx.args.quiet_wait, 0.10)
            if frac >= 0.10:
                log(f"{col.name}: machine still {frac * 100:.0f}% busy after {ctx.args.quiet_wait:.0f} s; "
                    "measuring anyway")
        scratch = Col(col.name)
        try:
            phase(scratch, attempt)
        finally:
            label = f" (attempt {attempt + 1})" if attempt else ""
            col.problems += [p + label for p in scratch.problems]
            col.log_lines += scratch.log_lines
            for k, (ok, total) in scratch.checked.items():
                have = col.checked.setdefault(k, [0, 0])
                have[0] += ok
                have[1] += total
        other = scratch.other_cpu.get(key)
        if best is None or (other is not None and other < best.other_cpu.get(key, 1e9)):
            best = scratch
        if other is None or other <= 10.0:
            break
        if attempt < ctx.args.retries:
            log(f"{col.name}: unrelated processes used {other:.0f}% of the CPU during the {key} run: again")
    assert best is not None
    for f in dataclasses.fields(Col):
        if f.name in ("name", "checked", "problems", "log_lines", "other_cpu"):
            continue
        if getattr(best, f.name) is not None:
            setattr(col, f.name, getattr(best, f.name))
    col.other_cpu.update(best.other_cpu)


def bench_curfew(ctx, store: Store, col: Col) -> None:
    with_retries(ctx, col, "HTTP", lambda c, i: curfew_http_phase(ctx, store, c, i))
    with_retries(ctx, col, "command", lambda c, i: curfew_command_phase(ctx, store, c, i))


def curfew_http_phase(ctx, store: Store, col: Col, attempt: int) -> None:
    """1 + 2: backlog enqueue, then processing with the Python handler;
    4: latency, in the same curfew once the backlog is done."""
    a = ctx.args
    n = a.jobs
    cf = Curfew(ctx, store, "http", f"{store.kind}-http-{attempt}").start()
    try:
        log(f"{col.name}: enqueue {n} jobs over {a.threads} connections (processor not started)")
        secs, ids, errors = curfew_enqueue(cf.admin, n, a.threads)
        col.enqueue_rps = len(ids) / secs
        log(f"{col.name}: enqueued {len(ids)} in {secs:.2f} s = {col.enqueue_rps:,.0f} jobs/s"
            + (f"; {len(errors)} errors, first {errors[0]}" if errors else ""))
        if errors:
            col.problems.append(f"enqueue: {len(errors)} of {n} failed, first: {errors[:3]}")
        with CpuWindow(main_pid=cf.proc.proc.pid) as w:
            cf.open_gate()
            counts = cf.wait_done(len(ids))
        rows = check_rows(cf.store.rows(), ids, col, "HTTP")
        col.proc_rps, col.proc_steady, col.proc_span_s = rates([r[4] for r in rows], [r[5] for r in rows])
        col.cpu_per_1k = w.system / len(rows) * 1000 if rows else None
        col.other_cpu["HTTP"] = w.other_pct
        log(f"{col.name}: processed {counts} in {col.proc_span_s:.2f} s: {hb.fmt(col.proc_rps)} jobs/s "
            f"(steady {hb.fmt(col.proc_steady)}), {w.system:.1f} CPU s (curfew {w.main_s:.2f}, "
            f"database server without the polls {w.db_s:.2f}), unrelated {w.other_pct:.0f}%")

        cf.wait_serving()
        time.sleep(0.5)
        log(f"{col.name}: latency: {a.lat_warmup} + {a.lat_jobs} jobs, {a.lat_gap_ms} ms apart")
        conn = http.client.HTTPConnection("127.0.0.1", cf.admin, timeout=30)

        def send() -> int:
            conn.request("POST", "/jobs", body=b'{"queue":"default","kind":"stamp","payload":{}}',
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 201:
                raise RuntimeError(f"{r.status} {data[:200]!r}")
            return json.loads(data)["id"]

        t_client, errors = paced(a.lat_warmup, a.lat_jobs, a.lat_gap_ms / 1000.0, send)
        conn.close()
        if errors:
            col.problems.append(f"latency enqueue: {len(errors)} failed, first: {errors[:3]}")
        cf.wait_done(len(ids) + a.lat_warmup + a.lat_jobs)
        lrows = check_rows(cf.store.rows(), list(t_client), col, "latency")
        stamps = cf.stamps()
        store_lat = [float(r[4] - r[3]) for r in lrows]  # whole ms
        handler_lat = [(stamps[r[0]] - t_client[r[0]]) * 1000.0 for r in lrows if r[0] in stamps]
        if len(handler_lat) != len(lrows):
            col.problems.append(f"latency: {len(lrows) - len(handler_lat)} succeeded jobs never reached the handler")
        if store_lat:  # whole ms (difference of two truncated ms timestamps): shown as integers
            col.lat_store_p50, col.lat_store_p99 = int(pct(store_lat, 50)), int(pct(store_lat, 99))
        col.lat_handler_p50, col.lat_handler_p99 = pct(handler_lat, 50), pct(handler_lat, 99)
        log(f"{col.name}: enqueue→start p50 {col.lat_store_p50} p99 {col.lat_store_p99} ms; "
            f"enqueue call→handler p50 {hb.fmt(col.lat_handler_p50, 2)} p99 {hb.fmt(col.lat_handler_p99, 2)} ms")
    finally:
        cf.stop()
        curfew_log_check(cf, col, "HTTP + latency")



def curfew_command_phase(ctx, store: Store, col: Col, attempt: int) -> None:
    """3: a command per job."""
    a = ctx.args
    n = a.jobs
    cf = Curfew(ctx, store, "command", f"{store.kind}-command-{attempt}").start()
    try:
        secs, ids, errors = curfew_enqueue(cf.admin, n, a.threads)
        if errors:
            col.problems.append(f"enqueue (command run): {len(errors)} of {n} failed, first: {errors[:3]}")
        log(f"{col.name}: command run: enqueued {len(ids)} in {secs:.2f} s")
        with CpuWindow(main_pid=cf.proc.proc.pid) as w:
            cf.open_gate()
            counts = cf.wait_done(len(ids))
        rows = check_rows(cf.store.rows(), ids, col, "command")
        col.cmd_rps, col.cmd_steady, span = rates([r[4] for r in rows], [r[5] for r in rows])
        col.cmd_cpu_per_1k = w.system / len(rows) * 1000 if rows else None
        col.other_cpu["command"] = w.other_pct
        log(f"{col.name}: command: {counts} in {span:.2f} s: {hb.fmt(col.cmd_rps)} jobs/s "
            f"(steady {hb.fmt(col.cmd_steady)}), {w.system:.1f} CPU s (curfew {w.main_s:.2f}, "
            f"database server without the polls {w.db_s:.2f}), unrelated {w.other_pct:.0f}%")
    finally:
        cf.stop()
        curfew_log_check(cf, col, "command")


# --------------------------------------------------------------------------
# RQ
# --------------------------------------------------------------------------

def redis_ok(url: str) -> bool:
    import redis
    with contextlib.suppress(Exception):
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    return False


def rq_worker_argv(ctx, cls: str, queue: str, burst: bool) -> list[str]:
    argv = [str(ctx.vbin / "rq"), "worker", "-w", cls, "-u", ctx.redis_url, "-P", str(BENCH_DIR),
            "--logging_level", "WARNING", "--disable-job-desc-logging"]
    return argv + (["--burst"] if burst else []) + [queue]


def rq_dt_ms(d) -> float | None:
    return d.timestamp() * 1000.0 if d is not None else None


def rq_fetch(conn, ids: list[str]):
    from rq.job import Job
    out = []
    for i in range(0, len(ids), 500):
        out += Job.fetch_many(ids[i:i + 500], connection=conn)
    return out


def bench_rq(ctx, col: Col, cls: str, tag: str) -> None:
    with_retries(ctx, col, "no-op", lambda c, i: rq_phase(ctx, c, cls, f"{tag}-{i}"))


def rq_phase(ctx, col: Col, cls: str, tag: str) -> None:
    import redis
    from rq import Queue, Worker
    from rq.job import JobStatus

    a = ctx.args
    n, r_workers = a.jobs, a.rq_workers
    conn = redis.Redis.from_url(ctx.redis_url)
    qname = f"curfew-bench-{os.getpid()}-{tag}"
    release_key = f"curfew-bench:{os.getpid()}:{tag}:release"
    procs: list[Proc] = []
    try:
        # Hold every worker inside a `block` job (waiting on a Redis list)
        # while the backlog is enqueued, then release them all at once: the
        # same start as curfew's gate, without a worker start-up ramp.
        q = Queue(qname, connection=conn)
        blockers = [q.enqueue("rq_jobs.block", ctx.redis_url, release_key, 300, result_ttl=600)
                    for _ in range(r_workers)]
        procs = [Proc(f"rq-{tag}", rq_worker_argv(ctx, cls, qname, burst=True), ctx.logdir, f"tp{i}").start()
                 for i in range(r_workers)]
        deadline = time.monotonic() + 60
        while sum(b.get_status(refresh=True) == JobStatus.STARTED for b in blockers) < r_workers:
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError("RQ workers did not all take a blocking job within 60 s\n"
                                   + procs[0].log_tail())
            time.sleep(0.05)
        log(f"{col.name}: enqueue {n} jobs over {a.threads} connections ({r_workers} workers held)")
        def make_call(_k: int) -> Callable[[int], str]:
            qq = Queue(qname, connection=redis.Redis.from_url(ctx.redis_url))
            return lambda _i: qq.enqueue("rq_jobs.noop", result_ttl=600).id

        secs, ids, errors = timed_clients(n, a.threads, make_call)
        col.enqueue_rps = len(ids) / secs
        log(f"{col.name}: enqueued {len(ids)} in {secs:.2f} s = {col.enqueue_rps:,.0f} jobs/s")
        if errors:
            col.problems.append(f"enqueue: {len(errors)} of {n} failed, first: {errors[:3]}")

        with CpuWindow(reaped_children_are_system=True) as w:
            conn.rpush(release_key, *([1] * r_workers))
            deadline = time.monotonic() + DONE_TIMEOUT_S
            while any(p.alive() for p in procs) and time.monotonic() < deadline:
                time.sleep(DB_POLL_S)  # burst workers exit once the queue is empty
        if any(p.alive() for p in procs):
            col.problems.append(f"RQ burst workers still running after {DONE_TIMEOUT_S:.0f} s")
        for p in procs:
            if p.proc.returncode not in (0, None):
                col.problems.append(f"RQ worker exited {hb.fmt_rc(p.proc.returncode)}")
        jobs = rq_fetch(conn, ids)
        done = [j for j in jobs if j is not None and j.get_status(refresh=False) == JobStatus.FINISHED]
        col.checked["no-op"] = [len(done), len(ids)]
        if len(done) != len(ids):
            st: dict = {}
            for j in jobs:
                s = "missing" if j is None else str(j.get_status(refresh=False))
                st[s] = st.get(s, 0) + 1
            col.problems.append(f"no-op run: {len(ids)} enqueued, {len(done)} finished; statuses {st}")
        col.proc_rps, col.proc_steady, col.proc_span_s = rates(
            [rq_dt_ms(j.started_at) for j in done], [rq_dt_ms(j.ended_at) for j in done])
        col.cpu_per_1k = w.system / len(done) * 1000 if done else None
        col.other_cpu["no-op"] = w.other_pct
        log(f"{col.name}: processed {len(done)} in {col.proc_span_s:.2f} s: {hb.fmt(col.proc_rps)} jobs/s "
            f"(steady {hb.fmt(col.proc_steady)}), {w.system:.1f} CPU s, unrelated {w.other_pct:.0f}%")
        for p in procs:
            col.log_lines += [f"[worker] {l}" for l in hb.interesting_log_lines(p.log_text(), 5)]
            p.close()
        procs = []

        # latency: idle (non-burst) workers, jobs 20 ms apart
        procs = [Proc(f"rq-{tag}", rq_worker_argv(ctx, cls, qname, burst=False), ctx.logdir, f"lat{i}").start()
                 for i in range(r_workers)]
        deadline = time.monotonic() + 60
        while Worker.count(queue=q) < r_workers:
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError("RQ workers did not register within 60 s\n" + procs[0].log_tail())
            time.sleep(0.05)
        time.sleep(1.0)  # registered, now in their blocking dequeue
        log(f"{col.name}: latency: {a.lat_warmup} + {a.lat_jobs} jobs, {a.lat_gap_ms} ms apart")
        t_client, errors = paced(a.lat_warmup, a.lat_jobs, a.lat_gap_ms / 1000.0,
                                 lambda: q.enqueue("rq_jobs.stamp", result_ttl=600).id)
        if errors:
            col.problems.append(f"latency enqueue: {len(errors)} failed, first: {errors[:3]}")
        lids = list(t_client)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = rq_fetch(conn, lids)
            if all(j is not None and j.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED)
                   for j in jobs):
                break
            time.sleep(DB_POLL_S)
        done = [j for j in jobs if j is not None and j.get_status(refresh=False) == JobStatus.FINISHED]
        col.checked["latency"] = [len(done), len(lids)]
        if len(done) != len(lids):
            col.problems.append(f"latency run: {len(lids)} enqueued, {len(done)} finished")
        store_lat = [rq_dt_ms(j.started_at) - rq_dt_ms(j.enqueued_at) for j in done]
        handler_lat = []
        for j in done:
            rv = j.return_value()
            if isinstance(rv, float):
                handler_lat.append((rv - t_client[j.id]) * 1000.0)
        col.lat_store_p50, col.lat_store_p99 = pct(store_lat, 50), pct(store_lat, 99)
        col.lat_handler_p50, col.lat_handler_p99 = pct(handler_lat, 50), pct(handler_lat, 99)
        log(f"{col.name}: enqueue→start p50 {hb.fmt(col.lat_store_p50, 2)} p99 {hb.fmt(col.lat_store_p99, 2)} ms; "
            f"enqueue call→handler p50 {hb.fmt(col.lat_handler_p50, 2)} p99 {hb.fmt(col.lat_handler_p99, 2)} ms")
        for p in procs:
            col.log_lines += [f"[worker] {l}" for l in hb.interesting_log_lines(p.log_text(), 5)]
    finally:
        for p in procs:
            p.close()
        # everything this run created in Redis (the DB was empty at the start)
        with contextlib.suppress(Exception):
            for key in conn.scan_iter(count=1000):
                conn.delete(key)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def ratio(cur: float | None, rq_vals: list[float | None], higher_is_better: bool) -> str:
    vals = [v for v in rq_vals if v is not None]
    if cur is None or not vals:
        return ""
    best = max(vals) if higher_is_better else min(vals)
    return f"{cur / best:.2f}×" if best else ""


def build_table(cols: dict[str, Col], args) -> str:
    names = [c for c in COLS if c in cols]
    header = ["metric"] + names + ["curfew SQLite / best RQ", "curfew PG / best RQ"]
    rq = [cols[c] for c in names if c.startswith("RQ")]
    t = args.threads

    def row(label, get, digits=0, hib: bool | None = None):
        cells = [label] + [hb.fmt(get(cols[c]), digits) for c in names]
        for cur in ("curfew SQLite", "curfew PostgreSQL"):
            cells.append(ratio(get(cols[cur]), [get(r) for r in rq], hib)
                         if hib is not None and cur in cols else "")
        return cells

    rows = [
        row(f"enqueue, {args.jobs} jobs over {t} keep-alive clients (jobs/s)", lambda c: c.enqueue_rps, 0, True),
        row("processing, no-op Python handler: first start → last finish (jobs/s)", lambda c: c.proc_rps, 0, True),
        row("processing, no-op Python handler: steady state, 10%→90% of finishes (jobs/s)",
            lambda c: c.proc_steady, 0, True),
        row("processing, no-op Python handler: CPU s per 1,000 jobs (all processes involved)",
            lambda c: c.cpu_per_1k, 2, False),
        row("processing, command `true` per job: first start → last finish (jobs/s)", lambda c: c.cmd_rps, 0),
        row("processing, command `true` per job: steady state (jobs/s)", lambda c: c.cmd_steady, 0),
        row("processing, command `true` per job: CPU s per 1,000 jobs", lambda c: c.cmd_cpu_per_1k, 2),
        row("idle latency, enqueue → start, store timestamps (curfew: whole ms), p50 (ms)",
            lambda c: c.lat_store_p50, 2),
        row("idle latency, enqueue → start, store timestamps (curfew: whole ms), p99 (ms)",
            lambda c: c.lat_store_p99, 2),
        row("idle latency, enqueue call → handler runs, p50 (ms)", lambda c: c.lat_handler_p50, 2, False),
        row("idle latency, enqueue call → handler runs, p99 (ms)", lambda c: c.lat_handler_p99, 2, False),
        row("jobs that ended succeeded (curfew) / finished (RQ), of enqueued, all runs",
            lambda c: ", ".join(f"{k} {ok}/{total}" for k, (ok, total) in c.checked.items()) or None),
        row("CPU used by unrelated processes during the processing runs (% of the machine)",
            lambda c: " / ".join(f"{k} {v:.0f}" for k, v in c.other_cpu.items()) or None),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def versions(ctx) -> dict:
    v = hb.versions(ctx.vbin / "python", ctx.curfew_bin)
    code = ("import importlib.metadata as m\n"
            "for n in ('rq','redis','fastapi','uvicorn'):\n"
            "    try: print(n, m.version(n))\n"
            "    except Exception: print(n, '-')\n")
    v.update(dict(l.split(" ", 1) for l in hb.sh([str(ctx.vbin / "python"), "-c", code]).splitlines() if " " in l))
    with contextlib.suppress(Exception):
        import redis
        info = redis.Redis.from_url(ctx.redis_url).info("server")
        v["redis-server"] = info.get("redis_version", "?")
        cfg = redis.Redis.from_url(ctx.redis_url).config_get("save")
        cfg.update(redis.Redis.from_url(ctx.redis_url).config_get("appendonly"))
        v["redis-persistence"] = f"save {cfg.get('save')!r}, appendonly {cfg.get('appendonly')}"
    if ctx.pg_ok:
        with contextlib.suppress(Exception):
            v["postgres"] = psql(ctx.args.pg_url, "SHOW server_version").strip()
            v["pg-durability"] = ("synchronous_commit " + psql(ctx.args.pg_url, "SHOW synchronous_commit").strip()
                                  + ", fsync " + psql(ctx.args.pg_url, "SHOW fsync").strip())
    v["sqlite"] = sqlite3.sqlite_version + " (python's; curfew links its own via sqlx)"
    return v


def notes(cols: dict[str, Col]) -> list[str]:
    out = []
    for name in COLS:
        c = cols.get(name)
        if c is None:
            continue
        out += [f"- {name}: {p}" for p in c.problems]
        out += [f"- {name}: unrelated processes used {v:.0f}% of the machine's CPU during the {k} "
                "processing run: its numbers are unreliable (machine shared with other work)"
                for k, v in c.other_cpu.items() if v > 10]
        out += [f"- {name} log: `{l.strip()[:300]}`" for l in c.log_lines]
    return out


def render_section(table, args, cmdline, mach, vers, skipped, cols) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## Job benchmark: curfew's job processor vs RQ on Redis",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}",
        f"- command: `{cmdline}`",
        f"- versions: curfew {vers.get('curfew')}; rq {vers.get('rq')}, redis-py {vers.get('redis')}, "
        f"Redis {vers.get('redis-server', '?')}; PostgreSQL {vers.get('postgres', '-')}; "
        f"fastapi {vers.get('fastapi')}, uvicorn {vers.get('uvicorn')}, python {vers.get('python')}",
        f"- durability: Redis {vers.get('redis-persistence', '?')} (jobs live in memory only); "
        f"PostgreSQL {vers.get('pg-durability', '?')}; curfew's SQLite store: WAL, synchronous=NORMAL",
        f"- curfew: `workers = {args.app_workers}` × `worker_concurrency = {args.worker_concurrency}` "
        f"(uvicorn, bench/jobs_app.py), queue `concurrency = {args.queue_concurrency}`, delivery "
        "`POST /jobs/noop` (or `command = [\"true\"]`); enqueue `POST /jobs` on the admin address",
        f"- RQ: {args.rq_workers} `rq worker` processes per column (`-w rq.worker.Worker`: forks a work horse "
        "per job, RQ's default; `-w rq.worker.SimpleWorker`: runs the job in the worker process), "
        "`--logging_level WARNING`; jobs `rq_jobs.noop` / `rq_jobs.stamp` (bench/rq_jobs.py); "
        "enqueue `Queue.enqueue`",
        f"- backlog: {args.jobs} jobs enqueued with nothing processing (curfew's workers held not-ready; "
        "RQ's workers each held inside a blocking job), then released at once; latency: "
        f"{args.lat_warmup} warm-up + {args.lat_jobs} jobs, {args.lat_gap_ms} ms apart, into an idle processor",
        f"- load average at the start: {hb.LOADAVG_AT_START}; before each measurement the script waited "
        f"up to {args.quiet_wait:g} s for other processes to use < 10% of the CPUs, and repeated it (up to "
        f"{args.retries} times) if they used more during its processing run; the least disturbed run counts",
    ]
    if skipped:
        parts.append(f"- skipped: {'; '.join(skipped)}")
    parts += ["", table, ""]
    parts += [
        "How to read it: the clients are this Python script (threads, keep-alive HTTP/1.1 with "
        "`http.client`, redis-py), on the same 2 CPUs as everything else. \"first start → last finish\" "
        "is N / (last finish − first start) from the store's own timestamps (curfew: `started_at`, "
        "`finished_at`, ms; RQ: `started_at`, `ended_at`, µs); \"steady state\" leaves out the first and "
        "last 10% of finishes. \"enqueue → start\" is `started_at − created_at` (curfew: created when "
        "the admin API / PostgreSQL receives it, started when claimed, before delivery) or "
        "`started_at − enqueued_at` (RQ: enqueued_at from the client, started_at in the work horse, "
        "after the fork); \"enqueue call → handler runs\" is the same clock for both: time.time() in "
        "this script before the enqueue call, time.time() in the handler / job function. CPU s per "
        "1,000 jobs counts every process of the system under test during the processing phase: curfew "
        "+ its workers (+ `true` children) or the rq workers (+ work horses), and all postgres / "
        "redis-server processes.",
    ]
    ns = notes(cols)
    parts += ["", "Notes (problems seen; WARN/ERROR log lines):", ""] + (ns or ["- none"])
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

@dataclass
class Ctx:
    args: argparse.Namespace
    logdir: Path
    vbin: Path
    curfew_bin: Path
    redis_url: str = ""
    redis_proc: Proc | None = None  # a private redis-server, if we started one
    redis_sid: int | None = None
    pg_ok: bool = False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=5000, help="backlog size N (default 5000)")
    ap.add_argument("--threads", type=int, default=4, help="enqueue clients (threads, one connection each; default 4)")
    ap.add_argument("--app-workers", type=int, default=2, help="curfew: app worker processes (default 2)")
    ap.add_argument("--worker-concurrency", type=int, default=32, help="curfew: worker_concurrency (default 32)")
    ap.add_argument("--queue-concurrency", type=int, default=16, help="curfew: queue concurrency (default 16)")
    ap.add_argument("--rq-workers", type=int, default=4, help="RQ worker processes (default 4)")
    ap.add_argument("--lat-jobs", type=int, default=200, help="latency: measured jobs (default 200)")
    ap.add_argument("--lat-warmup", type=int, default=10, help="latency: warm-up jobs, not counted (default 10)")
    ap.add_argument("--lat-gap-ms", type=int, default=20, help="latency: ms between enqueues (default 20)")
    ap.add_argument("--columns", default="sqlite,pg,rq-fork,rq-simple",
                    help="comma-separated subset of sqlite,pg,rq-fork,rq-simple")
    # sslmode=disable: on loopback TLS only adds cost (sqlx's default
    # `prefer` negotiates TLS when the server offers it, as this one does).
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
    ap.add_argument("--pg-schema", default="bench", help="dropped and recreated for every PostgreSQL run")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                    help="a Redis DB that must be empty (it is emptied again after each RQ run); "
                         "if nothing answers, a private redis-server is started on a free port")
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each run, wait up to this many seconds for other processes to use "
                         "< 10%% of the CPUs (0 = don't wait)")
    ap.add_argument("--retries", type=int, default=1,
                    help="run a measurement again (up to this many times) when unrelated processes used "
                         "more than 10%% of the CPUs during its processing run; the least disturbed counts "
                         "(default 1)")
    ap.add_argument("--venv", help="Python venv (default .venv or $CURFEW_VENV)")
    ap.add_argument("--build", action="store_true",
                    help="run `cargo build --release --features dev-tools --bins` (CARGO_TARGET_DIR, default /work/bench-target) first")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md")
    args = ap.parse_args()

    venv = hb.find_venv(args.venv)
    vpy = venv / "bin" / "python"
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
    except ImportError:
        # (a venv's python is a symlink to the system one: compare prefixes)
        if Path(sys.prefix).resolve() != venv.resolve() and not os.environ.get("JOBS_BENCH_REEXEC"):
            ok = subprocess.run([str(vpy), "-c", "import rq, redis"], capture_output=True).returncode == 0
            if ok:
                log(f"re-running with {vpy} (it has rq and redis)")
                os.environ["JOBS_BENCH_REEXEC"] = "1"
                os.execv(str(vpy), [str(vpy), str(Path(__file__).resolve()), *sys.argv[1:]])
    try:
        import redis  # noqa: F401,F811
        import rq  # noqa: F401,F811
        have_rq = True
    except ImportError:
        have_rq = False

    hb.LOADAVG_AT_START = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/jobs_bench.py" + "".join(" " + shlex.quote(x) for x in sys.argv[1:])
    signal.signal(signal.SIGTERM, hb._on_signal)
    signal.signal(signal.SIGINT, hb._on_signal)
    hb.become_subreaper()

    target = Path(os.environ.get("CARGO_TARGET_DIR", "/work/bench-target"))
    if args.build:
        subprocess.run(["cargo", "build", "--release", "--features", "dev-tools", "--bins"], cwd=REPO, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": str(target)})
    curfew_bin = target / "release" / "curfew"
    if not curfew_bin.exists():
        sys.exit(f"{curfew_bin} missing: run `CARGO_TARGET_DIR={target} cargo build --release --features dev-tools --bins` "
                 "(or pass --build)")

    logdir = Path(tempfile.mkdtemp(prefix="curfew-jobs-bench-"))
    log(f"logs, configs and SQLite stores in {logdir}")
    ctx = Ctx(args=args, logdir=logdir, vbin=venv / "bin", curfew_bin=curfew_bin)
    wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
    skipped: list[str] = []

    if "pg" in wanted:
        try:
            psql(args.pg_url, "SELECT 1")
            ctx.pg_ok = True
        except Exception as e:  # noqa: BLE001
            wanted.remove("pg")
            skipped.append(f"curfew PostgreSQL ({args.pg_url} not reachable: {str(e)[:200]})")
            log(skipped[-1])
    rq_cols = [c for c in wanted if c.startswith("rq-")]
    if rq_cols and not have_rq:
        for c in rq_cols:
            wanted.remove(c)
        skipped.append(f"RQ (rq/redis not installed in {venv}: `{venv}/bin/pip install -r bench/requirements.txt`)")
        log(skipped[-1])
    elif rq_cols:
        import redis
        ctx.redis_url = args.redis_url
        if not redis_ok(ctx.redis_url):
            port = hb.free_port()
            log(f"no Redis at {args.redis_url}: starting a private redis-server on 127.0.0.1:{port}")
            ctx.redis_proc = Proc("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                                   "--save", "", "--appendonly", "no"], logdir, "private").start()
            ctx.redis_sid = ctx.redis_proc.sid
            ctx.redis_url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while not redis_ok(ctx.redis_url) and time.monotonic() < deadline:
                time.sleep(0.05)
        if not redis_ok(ctx.redis_url):
            sys.exit(f"Redis not reachable at {ctx.redis_url}")
        if redis.Redis.from_url(ctx.redis_url).dbsize():
            sys.exit(f"Redis DB {ctx.redis_url} is not empty: pick an unused one with --redis-url "
                     "(the benchmark deletes every key of it after each RQ run)")

    cols: dict[str, Col] = {}
    t_start = time.monotonic()
    plan = []
    if "sqlite" in wanted:
        plan.append(("curfew SQLite", lambda c: bench_curfew(ctx, Store("sqlite", "", path=logdir / "jobs.db"), c)))
    if "pg" in wanted:
        plan.append(("curfew PostgreSQL",
                     lambda c: bench_curfew(ctx, Store("pg", args.pg_url, schema=args.pg_schema), c)))
    if "rq-fork" in wanted:
        plan.append(("RQ Worker (fork)", lambda c: bench_rq(ctx, c, RQ_CLASSES["RQ Worker (fork)"], "fork")))
    if "rq-simple" in wanted:
        plan.append(("RQ SimpleWorker", lambda c: bench_rq(ctx, c, RQ_CLASSES["RQ SimpleWorker"], "simple")))
    for name, fn in plan:
        col = cols.setdefault(name, Col(name))
        try:
            fn(col)
        except Exception as e:  # noqa: BLE001  record and go on with the next column
            msg = f"benchmark error: {e}"
            log(f"{name}: {msg}")
            col.problems.append(msg.replace("\n", " | ")[:2000])
        finally:
            # the processes of this column (a private redis-server stays till the end)
            for sid in list(hb._SESSIONS):
                if sid != ctx.redis_sid:
                    hb.kill_session(sid)
    if "pg" in wanted:
        with contextlib.suppress(Exception):
            psql(args.pg_url, f"DROP SCHEMA IF EXISTS {args.pg_schema} CASCADE")
    log(f"done in {time.monotonic() - t_start:.0f} s")

    table = build_table(cols, args)
    print(table)
    ns = notes(cols)
    if ns:
        print("\nNotes:")
        print("\n".join(ns))
    if args.write:
        hb.write_results(render_section(table, args, cmdline, hb.machine_info(), versions(ctx), skipped, cols),
                         SECTION_BEGIN, SECTION_END)
    if ctx.redis_proc is not None:
        ctx.redis_proc.close()
    hb.kill_all_sessions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
