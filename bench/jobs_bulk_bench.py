#!/usr/bin/env python3
"""Bulk enqueue and scrape-cost benchmark for curfew's job store (issue 13,
"Benchmark"), on this machine, loopback only.

Part 1, bulk enqueue jobs/s: N no-op jobs (default 100,000) into a fresh
store with nothing processing them (curfew's app workers answer `/ready`
with 503 until a gate file exists, so its processor never starts):

  - curfew `POST /jobs` with a JSON array of 1,000 or 10,000 jobs, one
    keep-alive connection (http.client), one request after the other;
  - curfew single-job `POST /jobs` over 4 keep-alive connections (threads),
    --single jobs (default 5,000), for comparison;
  - RQ `Queue.enqueue_many` (one Redis pipeline per batch, `Queue.prepare_data`
    per job) with the same N and batch sizes, and RQ `Queue.enqueue` one at a
    time over 4 threads, on the local Redis.

  On SQLite (a file in the temp dir) and on PostgreSQL (a fresh schema).
  Every request's answer is checked (201, `created` = batch size).

Part 2, scrape cost vs history: curfew with the gate open (processor idle,
`[jobs.retention] succeeded = "30d"` so the pruner deletes nothing), and
10 succeeded jobs in the store, then H (default 1,000,000), inserted with SQL
directly (PostgreSQL: INSERT … SELECT FROM generate_series, then ANALYZE;
SQLite: a recursive CTE). 50 sequential `GET /status` and 50 `GET /metrics`
on the admin address (keep-alive) each: median and p99, ratio H / 10. Every
answer is checked (200, the store answered: `curfew_jobs_store_up 1`).

    python3 bench/jobs_bulk_bench.py --curfew target/release/curfew
    python3 bench/jobs_bulk_bench.py --quick --curfew target/debug/curfew   # smoke run
    python3 bench/jobs_bulk_bench.py --write --json /tmp/bulk.json         # record in bench/RESULTS.md

Stdlib only for curfew; re-executes itself with the venv's python (which has
rq and redis, bench/requirements.txt) for the RQ rows. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench as hb  # noqa: E402  (sessions, subreaper, cleanup, machine info, write_results)
import jobs_bench as jb  # noqa: E402  (Proc, pct, psql)

BENCH_DIR = hb.BENCH_DIR
REPO = hb.REPO
SECTION_BEGIN = "<!-- jobs_bulk:begin -->"
SECTION_END = "<!-- jobs_bulk:end -->"
log = hb.log
ADMIN_TIMEOUT_S = 60.0
STORES = {"sqlite": "SQLite", "pg": "PostgreSQL"}


# --------------------------------------------------------------------------
# curfew
# --------------------------------------------------------------------------

def psql(url: str, sql: str, timeout: float = 60) -> str:
    r = subprocess.run(["psql", "-X", "-q", "-At", "-F", ",", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed ({sql.strip()[:60]}): {r.stderr.strip()}")
    return r.stdout


@dataclass
class Store:
    kind: str  # "sqlite" | "pg"
    pg_url: str = ""
    schema: str = ""
    path: Path | None = None

    def url(self) -> str:
        return self.pg_url if self.kind == "pg" else "sqlite://" + str(self.path)

    def reset(self) -> None:
        if self.kind == "pg":
            jb.psql(self.pg_url, f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        else:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(self.path) + suffix).unlink()

    def sql(self, sql: str) -> str:
        if self.kind == "pg":
            return jb.psql(self.pg_url, f"SET search_path TO {self.schema}; {sql}")
        con = sqlite3.connect(str(self.path), timeout=60)
        try:
            rows = con.execute(sql).fetchall()
            con.commit()
            return "\n".join(",".join(str(c) for c in r) for r in rows)
        finally:
            con.close()

    def count(self) -> int:
        return int(self.sql("SELECT count(*) FROM jobs").strip().splitlines()[-1])

    def add_history(self, n: int) -> float:
        """Inserts n succeeded jobs (finished a minute ago, one attempt);
        returns the seconds it took (PostgreSQL: + ANALYZE)."""
        now = int(time.time() * 1000)
        t0 = time.monotonic()
        if self.kind == "pg":
            psql(self.pg_url, f"""SET search_path TO {self.schema};
                INSERT INTO jobs (queue, kind, payload, priority, run_at, attempt, max_attempts, state,
                                  crashes, releases, created_at, updated_at, started_at, finished_at)
                SELECT 'default', 'noop', jsonb_build_object('i', g), 0, {now} - 70000, 1, 20, 'succeeded',
                       0, 0, {now} - 70000, {now} - 60000 + g % 1000, {now} - 61000, {now} - 60000 + g % 1000
                FROM generate_series(1, {n}) AS g;
                ANALYZE jobs;""", timeout=1800)
        else:
            # in transactions of 20,000 rows (~0.3 s each): one long write
            # transaction would hold SQLite's single write lock past curfew's
            # busy timeout and make its claims fail meanwhile (a WARN)
            con = sqlite3.connect(str(self.path), timeout=60)
            try:
                for lo in range(0, n, 20_000):
                    self._sqlite_chunk(con, now, lo + 1, min(n, lo + 20_000))
            finally:
                con.close()
        return time.monotonic() - t0

    @staticmethod
    def _sqlite_chunk(con, now: int, lo: int, hi: int) -> None:
        con.execute(f"""
            WITH RECURSIVE g(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM g WHERE i < {hi})
            INSERT INTO jobs (queue, kind, payload, priority, run_at, attempt, max_attempts, state,
                              crashes, releases, created_at, updated_at, started_at, finished_at)
            SELECT 'default', 'noop', json_object('i', i), 0, {now} - 70000, 1, 20, 'succeeded',
                   0, 0, {now} - 70000, {now} - 60000 + i % 1000, {now} - 61000, {now} - 60000 + i % 1000
            FROM g""")
        con.commit()


def write_config(path: Path, ctx, store: Store, admin: int, port: int) -> None:
    uvicorn = str(ctx.vbin / "uvicorn")
    lines = [
        f"command = {json.dumps([uvicorn, 'jobs_app:app', '--fd', '3', '--no-access-log', '--log-level', 'warning'])}",
        "workers = 1",
        "worker_concurrency = 8",
        f'bind = "127.0.0.1:{port}"',
        f'admin_bind = "127.0.0.1:{admin}"',
        f'control_socket = "{path.parent / (path.stem + ".sock")}"',
        'ready_path = "/ready"',
        'boot_timeout = "300s"',
        "",
        "[jobs]",
        f'store = "{store.url()}"',
    ]
    if store.kind == "pg":
        lines.append(f'pg_schema = "{store.schema}"')
    lines += ["", "[jobs.queues.default]", "concurrency = 4",
              "", "[jobs.retention]", 'succeeded = "30d"', 'cancelled = "30d"', 'dead = "30d"']
    path.write_text("\n".join(lines) + "\n")


class Curfew:
    """curfew with the no-op app (bench/jobs_app.py); its workers stay
    not-ready (the processor does not start) until open_gate()."""

    def __init__(self, ctx, store: Store, tag: str):
        self.ctx, self.store, self.tag = ctx, store, tag
        self.port, self.admin = hb.free_port(), hb.free_port()
        self.gate = ctx.tmp / f"gate-{tag}"
        self.config = ctx.tmp / f"curfew-{tag}.toml"
        write_config(self.config, ctx, store, self.admin, self.port)
        self.proc = jb.Proc("curfew", [str(ctx.curfew_bin), "serve", "--config", str(self.config)],
                            ctx.tmp, tag, env={"JOBS_APP_GATE": str(self.gate)})
        self.exit_code: int | None = None

    def start(self, reset: bool = True) -> "Curfew":
        if reset:
            self.store.reset()
        self.proc.start()
        self._wait(lambda: jb.http_json(self.admin, "GET", "/healthz", timeout=1.0)[0] == 200, "admin /healthz")
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
        self._wait(lambda: jb.http_json(self.admin, "GET", "/readyz", timeout=1.0)[0] == 200, "/readyz 200")

    def stop(self) -> None:
        if self.proc.alive():
            self.exit_code, _ = self.proc.sigterm_and_wait()
        self.proc.close()

    def check_log(self, res: "Res", what: str) -> None:
        if self.exit_code not in (0, None):
            res.problems.append(f"{what}: curfew exited {hb.fmt_rc(self.exit_code)} after SIGTERM")
        res.problems += [f"{what} log: `{l.strip()[:300]}`"
                         for l in hb.interesting_log_lines(self.proc.log_text(), limit=10)]


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

@dataclass
class Res:
    enqueue: list[dict] = field(default_factory=list)  # {store, method, batch, jobs, seconds, jobs_s, errors}
    scrape: list[dict] = field(default_factory=list)   # {store, history, endpoint, ms: [...], median, p99, bytes}
    fill: list[dict] = field(default_factory=list)     # {store, rows, seconds}
    problems: list[str] = field(default_factory=list)


def job_obj(i: int) -> dict:
    return {"queue": "default", "kind": "noop", "payload": {"i": i}}


def curfew_bulk(admin: int, n: int, batch: int) -> tuple[float, int, list[str]]:
    """n jobs in JSON-array batches over one keep-alive connection; returns
    (seconds, jobs created, errors). The body is built inside the clock (as
    RQ's prepare_data is)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
    created, errors = 0, []
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch):
            body = json.dumps([job_obj(i) for i in range(start, min(n, start + batch))]).encode()
            conn.request("POST", "/jobs", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            want = min(n, start + batch) - start
            if r.status != 201:
                errors.append(f"batch at {start}: {r.status} {data[:200]!r}")
                continue
            got = json.loads(data).get("created")
            if got != want:
                errors.append(f"batch at {start}: created {got}, sent {want}")
            created += got or 0
    finally:
        secs = time.perf_counter() - t0
        conn.close()
    return secs, created, errors


def curfew_single(admin: int, n: int, threads: int) -> tuple[float, int, list[str]]:
    def make_call(_k: int):
        conn = [http.client.HTTPConnection("127.0.0.1", admin, timeout=30)]

        def call(i: int) -> int:
            try:
                conn[0].request("POST", "/jobs", body=json.dumps(job_obj(i)).encode(),
                                headers={"Content-Type": "application/json"})
                r = conn[0].getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                conn[0].close()
                conn[0] = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
                raise
            if r.status != 201:
                raise RuntimeError(f"{r.status} {data[:200]!r}")
            return json.loads(data)["id"]
        return call

    secs, ids, errors = jb.timed_clients(n, threads, make_call)
    return secs, len(ids), errors


def record_enqueue(res: Res, store: str, method: str, batch: int | None, n: int,
                   out: tuple[float, int, list[str]]) -> None:
    secs, created, errors = out
    rate = created / secs if secs > 0 else None
    res.enqueue.append({"store": store, "method": method, "batch": batch, "jobs": n, "created": created,
                        "seconds": secs, "jobs_s": rate, "errors": errors[:5], "n_errors": len(errors)})
    log(f"{store} {method} batch {batch or 1}: {created}/{n} in {secs:.2f} s = {hb.fmt(rate)} jobs/s"
        + (f"; {len(errors)} errors, first {errors[0]}" if errors else ""))
    if errors or created != n:
        res.problems.append(f"{store} {method} (batch {batch or 1}): {created} of {n} created; "
                            f"{len(errors)} errors, first: {errors[:2]}")


def bench_enqueue_curfew(ctx, store: Store, res: Res) -> None:
    a = ctx.args
    name = STORES[store.kind]
    runs = [("POST /jobs array", b) for b in a.batches] + [("POST /jobs single", None)]
    for method, batch in runs:
        tag = f"{store.kind}-enq-{batch or 1}"
        if store.kind == "sqlite":
            store.path = ctx.tmp / f"jobs-{tag}.db"
        cf = Curfew(ctx, store, tag).start()
        try:
            if batch:
                out = curfew_bulk(cf.admin, a.jobs, batch)
                n = a.jobs
            else:
                out = curfew_single(cf.admin, a.single, a.threads)
                n = a.single
            record_enqueue(res, name, method, batch, n, out)
            in_store = store.count()
            if in_store != out[1]:
                res.problems.append(f"{name} {method} (batch {batch or 1}): {out[1]} created, "
                                    f"{in_store} rows in the store")
        finally:
            cf.stop()
            cf.check_log(res, f"{name} enqueue {tag}")
            store.reset()


def bench_enqueue_rq(ctx, res: Res) -> None:
    import redis
    from rq import Queue

    a = ctx.args
    conn = redis.Redis.from_url(ctx.redis_url)
    qname = f"curfew-bulk-bench-{os.getpid()}"
    try:
        for batch in a.batches:
            q = Queue(qname, connection=conn)
            t0 = time.perf_counter()
            created, errors = 0, []
            for start in range(0, a.jobs, batch):
                try:
                    jobs = q.enqueue_many([Queue.prepare_data("rq_jobs.noop", result_ttl=600)
                                           for _ in range(start, min(a.jobs, start + batch))])
                    created += len(jobs)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{type(e).__name__}: {e}")
            secs = time.perf_counter() - t0
            record_enqueue(res, "Redis", "RQ enqueue_many", batch, a.jobs, (secs, created, errors))
            if q.count != created:
                res.problems.append(f"RQ enqueue_many batch {batch}: {created} enqueued, queue holds {q.count}")
            conn.flushdb()

        def make_call(_k: int):
            qq = Queue(qname, connection=redis.Redis.from_url(ctx.redis_url))
            return lambda _i: qq.enqueue("rq_jobs.noop", result_ttl=600).id

        secs, ids, errors = jb.timed_clients(a.single, a.threads, make_call)
        record_enqueue(res, "Redis", "RQ enqueue single", None, a.single, (secs, len(ids), errors))
    finally:
        conn.flushdb()


# --------------------------------------------------------------------------
# part 2: scrapes
# --------------------------------------------------------------------------

def scrape(admin: int, path: str, n: int) -> tuple[list[float], int, list[str]]:
    """n sequential GETs over one keep-alive connection (after 3 warm-up
    ones); returns (ms each, bytes of the last body, problems)."""
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
    times, problems, size = [], [], 0
    try:
        for i in range(n + 3):
            t0 = time.perf_counter()
            conn.request("GET", path)
            r = conn.getresponse()
            data = r.read()
            ms = (time.perf_counter() - t0) * 1000.0
            size = len(data)
            if r.status != 200:
                problems.append(f"GET {path}: {r.status} {data[:200]!r}")
            elif path == "/metrics" and b"curfew_jobs_store_up 1" not in data:
                problems.append(f"GET /metrics: no `curfew_jobs_store_up 1` (the store's count timed out?)")
            elif path == "/status" and b'"default"' not in data:
                problems.append("GET /status: queue `default` missing (the store's count timed out?)")
            if i >= 3:
                times.append(ms)
    finally:
        conn.close()
    return times, size, list(dict.fromkeys(problems))


def bench_scrape(ctx, store: Store, res: Res) -> None:
    a = ctx.args
    name = STORES[store.kind]
    tag = f"{store.kind}-scrape"
    if store.kind == "sqlite":
        store.path = ctx.tmp / f"jobs-{tag}.db"
    cf = Curfew(ctx, store, tag).start()
    try:
        cf.open_gate()
        small = 10
        for history in (small, a.history):
            have = store.count()
            if history > have:
                log(f"{name}: inserting {history - have:,} succeeded jobs")
                secs = store.add_history(history - have)
                res.fill.append({"store": name, "rows": history - have, "seconds": secs})
                log(f"{name}: inserted in {secs:.1f} s")
            rows = store.count()
            if rows != history:
                res.problems.append(f"{name}: {rows} rows in the store, wanted {history} (pruned?)")
            time.sleep(0.5)
            for path in ("/status", "/metrics"):
                times, size, probs = scrape(cf.admin, path, a.scrapes)
                res.problems += [f"{name}, {history:,} finished: {p}" for p in probs]
                med, p99 = jb.pct(times, 50), jb.pct(times, 99)
                res.scrape.append({"store": name, "history": history, "endpoint": path, "ms": times,
                                   "median": med, "p99": p99, "bytes": size})
                log(f"{name}, {history:,} finished: GET {path} median {med:.2f} ms, p99 {p99:.2f} ms ({size} B)")
        after = store.count()
        if after != a.history:
            res.problems.append(f"{name}: {after} rows at the end, wanted {a.history} (the pruner deleted some?)")
    finally:
        cf.stop()
        cf.check_log(res, f"{name} scrape")
        store.reset()


# --------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------

def enqueue_table(res: Res) -> str:
    rq = {(r["batch"]): r["jobs_s"] for r in res.enqueue if r["store"] == "Redis"}
    lines = ["| store | method | jobs per request | jobs | jobs/s | ratio to RQ (same batch) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in res.enqueue:
        base = rq.get(r["batch"])
        ratio = (f"{r['jobs_s'] / base:.2f}×" if r["store"] != "Redis" and base and r["jobs_s"] else "—")
        lines.append(f"| {r['store']} | {r['method']} | {min(r['batch'] or 1, r['jobs']):,} | {r['created']:,} | "
                     f"{hb.fmt(r['jobs_s'])} | {ratio} |")
    return "\n".join(lines)


def scrape_table(res: Res) -> str:
    lines = ["| store | finished jobs | /status median (ms) | /status p99 (ms) | /metrics median (ms) | "
             "/metrics p99 (ms) |", "|---|---:|---:|---:|---:|---:|"]
    by = {(r["store"], r["history"], r["endpoint"]): r for r in res.scrape}
    stores = list(dict.fromkeys(r["store"] for r in res.scrape))
    for s in stores:
        hs = sorted({r["history"] for r in res.scrape if r["store"] == s})
        for h in hs:
            st, me = by.get((s, h, "/status")), by.get((s, h, "/metrics"))
            lines.append(f"| {s} | {h:,} | {hb.fmt(st and st['median'], 2)} | {hb.fmt(st and st['p99'], 2)} | "
                         f"{hb.fmt(me and me['median'], 2)} | {hb.fmt(me and me['p99'], 2)} |")
        if len(hs) == 2:
            def rat(ep: str, k: str) -> str:
                lo, hi = by.get((s, hs[0], ep)), by.get((s, hs[1], ep))
                return f"{hi[k] / lo[k]:.2f}×" if lo and hi and lo[k] else "—"
            lines.append(f"| {s} | ratio {hs[1]:,} / {hs[0]:,} | {rat('/status', 'median')} | "
                         f"{rat('/status', 'p99')} | {rat('/metrics', 'median')} | {rat('/metrics', 'p99')} |")
    return "\n".join(lines)


def render_section(ctx, res: Res, cmdline: str, vers: dict, skipped: list[str]) -> str:
    a = ctx.args
    mach = hb.machine_info()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## Bulk enqueue and scrape cost vs history (issue 13)",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}",
        f"- command: `{cmdline}`",
        f"- versions: curfew {vers.get('curfew')}; rq {vers.get('rq')}, redis-py {vers.get('redis')}, "
        f"Redis {vers.get('redis-server', '?')}; PostgreSQL {vers.get('postgres', '-')}; python {vers.get('python')}",
        f"- durability: Redis {vers.get('redis-persistence', '?')}; PostgreSQL {vers.get('pg-durability', '?')}; "
        "curfew's SQLite store: WAL, synchronous=NORMAL",
        f"- load average at the start: {hb.LOADAVG_AT_START}",
    ]
    if skipped:
        parts.append(f"- skipped: {'; '.join(skipped)}")
    parts += [
        "",
        f"Bulk enqueue: {a.jobs:,} no-op jobs per row (single-job rows: {a.single:,}), each curfew row into a "
        "fresh store with the processor not started (app workers held not-ready). Arrays: one keep-alive "
        "connection (http.client), one request at a time, the JSON body built inside the clock. Single: "
        f"{a.threads} threads, one keep-alive connection each. RQ: `Queue.enqueue_many` of "
        "`Queue.prepare_data(...)` (one pipeline per batch), and `Queue.enqueue` over the same threads.",
        "",
        enqueue_table(res),
        "",
        f"Scrape cost: curfew with the processor running idle, `[jobs.retention] succeeded = \"30d\"`; "
        f"10 succeeded jobs, then {a.history:,} (inserted with SQL; PostgreSQL ANALYZEd after the insert); "
        f"{a.scrapes} sequential GETs of each endpoint on one keep-alive connection after 3 warm-up ones.",
        "",
        scrape_table(res),
        "",
    ]
    if res.fill:
        parts.append("History inserts: " + "; ".join(
            f"{f['store']} {f['rows']:,} rows in {f['seconds']:.1f} s" for f in res.fill))
        parts.append("")
    parts += ["Notes (problems seen; WARN/ERROR log lines):", ""] + ([f"- {p}" for p in res.problems] or ["- none"])
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    vbin: Path
    curfew_bin: Path
    redis_url: str = ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curfew", default=str(REPO / "target" / "release" / "curfew"),
                    help="curfew binary (default target/release/curfew)")
    ap.add_argument("--jobs", type=int, help="jobs per bulk row, N (default 100,000; --quick 10,000)")
    ap.add_argument("--batches", default="1000,10000", help="jobs per request (default 1000,10000)")
    ap.add_argument("--single", type=int, help="jobs for the single-job rows (default 5,000; --quick 1,000)")
    ap.add_argument("--threads", type=int, default=4, help="connections for the single-job rows (default 4)")
    ap.add_argument("--history", type=int, help="finished jobs for the large scrape case "
                                                 "(default 1,000,000; --quick 10,000)")
    ap.add_argument("--scrapes", type=int, default=50, help="GETs per endpoint and case (default 50)")
    ap.add_argument("--only", default="enqueue,scrape", help="parts: enqueue,scrape (default both)")
    ap.add_argument("--stores", default="sqlite,pg,rq", help="subset of sqlite,pg,rq (default all)")
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, 10,000-row history")
    ap.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14",
                    help="a Redis DB that must be empty (emptied again after each RQ row)")
    ap.add_argument("--venv", help="Python venv (default .venv or $CURFEW_VENV)")
    ap.add_argument("--json", metavar="PATH", help="write every raw number (each scrape's ms) as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, SQLite files)")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md (jobs_bulk)")
    args = ap.parse_args()
    args.jobs = args.jobs or (10_000 if args.quick else 100_000)
    args.single = args.single or (1_000 if args.quick else 5_000)
    args.history = args.history or (10_000 if args.quick else 1_000_000)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    parts = {p.strip() for p in args.only.split(",")}
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    venv = hb.find_venv(args.venv)
    vpy = venv / "bin" / "python"
    try:
        import redis  # noqa: F401
        import rq  # noqa: F401
        have_rq = True
    except ImportError:
        have_rq = False
        if Path(sys.prefix).resolve() != venv.resolve() and not os.environ.get("JOBS_BULK_REEXEC"):
            if subprocess.run([str(vpy), "-c", "import rq, redis"], capture_output=True).returncode == 0:
                log(f"re-running with {vpy} (it has rq and redis)")
                os.environ["JOBS_BULK_REEXEC"] = "1"
                os.execv(str(vpy), [str(vpy), str(Path(__file__).resolve()), *sys.argv[1:]])

    curfew_bin = Path(args.curfew).resolve()
    if not curfew_bin.exists():
        sys.exit(f"{curfew_bin} missing: `cargo build --release` or pass --curfew PATH")
    hb.LOADAVG_AT_START = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/jobs_bulk_bench.py" + "".join(" " + shlex.quote(x) for x in sys.argv[1:])
    signal.signal(signal.SIGTERM, hb._on_signal)
    signal.signal(signal.SIGINT, hb._on_signal)
    hb.become_subreaper()

    tmp = Path(tempfile.mkdtemp(prefix="curfew-jobs-bulk-"))
    log(f"configs, logs and SQLite stores in {tmp}")
    ctx = Ctx(args=args, tmp=tmp, vbin=venv / "bin", curfew_bin=curfew_bin)
    res = Res()
    skipped: list[str] = []
    schema = f"bench_bulk_{os.getpid()}"
    pg_ok = False
    if "pg" in stores:
        try:
            jb.psql(args.pg_url, "SELECT 1")
            pg_ok = True
        except Exception as e:  # noqa: BLE001
            stores.remove("pg")
            skipped.append(f"PostgreSQL ({args.pg_url}: {str(e)[:200]})")
    if "rq" in stores and "enqueue" in parts:
        if not have_rq:
            stores.remove("rq")
            skipped.append(f"RQ (rq/redis not installed in {venv})")
        else:
            import redis
            ctx.redis_url = args.redis_url
            if not jb.redis_ok(ctx.redis_url):
                stores.remove("rq")
                skipped.append(f"RQ (no Redis at {ctx.redis_url})")
            elif redis.Redis.from_url(ctx.redis_url).dbsize():
                sys.exit(f"Redis DB {ctx.redis_url} is not empty: pick an unused one with --redis-url "
                         "(the benchmark deletes every key of it)")
    for s in skipped:
        log(f"skipped: {s}")

    def pg_store() -> Store:
        return Store("pg", pg_url=args.pg_url, schema=schema)

    def sqlite_store() -> Store:
        return Store("sqlite")

    t_start = time.monotonic()
    try:
        steps = []
        if "enqueue" in parts:
            if "sqlite" in stores:
                steps.append(("SQLite enqueue", lambda: bench_enqueue_curfew(ctx, sqlite_store(), res)))
            if "pg" in stores:
                steps.append(("PostgreSQL enqueue", lambda: bench_enqueue_curfew(ctx, pg_store(), res)))
            if "rq" in stores:
                steps.append(("RQ enqueue", lambda: bench_enqueue_rq(ctx, res)))
        if "scrape" in parts:
            if "sqlite" in stores:
                steps.append(("SQLite scrape", lambda: bench_scrape(ctx, sqlite_store(), res)))
            if "pg" in stores:
                steps.append(("PostgreSQL scrape", lambda: bench_scrape(ctx, pg_store(), res)))
        for name, fn in steps:
            try:
                fn()
            except Exception as e:  # noqa: BLE001  record and go on
                log(f"{name}: error: {e}")
                res.problems.append(f"{name}: benchmark error: {str(e).replace(chr(10), ' | ')[:1500]}")
            finally:
                hb.kill_all_sessions()
    finally:
        hb.kill_all_sessions()
        if pg_ok:
            with contextlib.suppress(Exception):
                jb.psql(args.pg_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if ctx.redis_url and have_rq:
            with contextlib.suppress(Exception):
                import redis
                redis.Redis.from_url(ctx.redis_url).flushdb()
    log(f"done in {time.monotonic() - t_start:.0f} s")

    vers = {}
    if args.write or args.json:
        vers = hb.versions(ctx.vbin / "python", curfew_bin)
        with contextlib.suppress(Exception):
            import importlib.metadata as m
            vers["rq"], vers["redis"] = m.version("rq"), m.version("redis")
        with contextlib.suppress(Exception):
            import redis
            r = redis.Redis.from_url(args.redis_url)
            vers["redis-server"] = r.info("server").get("redis_version", "?")
            cfg = r.config_get("save")
            cfg.update(r.config_get("appendonly"))
            vers["redis-persistence"] = f"save {cfg.get('save')!r}, appendonly {cfg.get('appendonly')}"
        if pg_ok:
            with contextlib.suppress(Exception):
                vers["postgres"] = jb.psql(args.pg_url, "SHOW server_version").strip()
                vers["pg-durability"] = ("synchronous_commit " + jb.psql(args.pg_url, "SHOW synchronous_commit").strip()
                                         + ", fsync " + jb.psql(args.pg_url, "SHOW fsync").strip())

    out = []
    if res.enqueue:
        out += [enqueue_table(res), ""]
    if res.scrape:
        out += [scrape_table(res), ""]
    if res.fill:
        out.append("History inserts: " + "; ".join(
            f"{f['store']} {f['rows']:,} rows in {f['seconds']:.1f} s" for f in res.fill))
    print("\n".join(out))
    if res.problems:
        print("\nNotes:\n" + "\n".join(f"- {p}" for p in res.problems))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": cmdline, "args": {k: v for k, v in vars(args).items()}, "versions": vers,
            "skipped": skipped, "enqueue": res.enqueue, "scrape": res.scrape, "fill": res.fill,
            "problems": res.problems}, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    if args.write:
        hb.write_results(render_section(ctx, res, cmdline, vers, skipped), SECTION_BEGIN, SECTION_END)
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
