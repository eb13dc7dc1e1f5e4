#!/usr/bin/env python3
"""Benchmarks users recognise: curfew's proxy hop against nginx, uvicorn,
gunicorn and granian, measured with wrk, on a trivial and on realistic endpoints.

Two apps, the same in every setup, each with 2 worker processes (--workers):

  FastAPI (bench/hop_app.py)    /plain  "hello"
                                /json   ~10 KB JSON through a pydantic response model
                                /stream 1 MiB StreamingResponse, 16 chunks of 64 KiB
  Django (bench/hop_django/)    /items  a small ORM read (20 rows) on SQLite, as JSON

Setups (port P; uvicorn always with --loop uvloop --http httptools, checked):

  curfew-uvicorn  curfew serve -b 127.0.0.1:P -w 2 --worker-concurrency 32 -- uvicorn APP --fd 3
                  (fd 3 is a Unix socket: the hop nginx-uvicorn has)
  curfew-uvicorn-tcp  the same with --worker-socket fd-tcp (fd 3 on loopback TCP)
  nginx-uvicorn   nginx (1 worker, upstream keepalive 32, default proxy buffering)
                  -> 2 x uvicorn APP --uds <tmp>/uN.sock
  uvicorn         uvicorn APP --workers 2
  gunicorn        gunicorn -w 2 -k uvicorn_worker.UvicornWorker (Django: -k gthread --threads 4, WSGI)
  granian         granian --interface asgi --workers 2 --loop uvloop (Django: --interface wsgi)
  curfew-granian  curfew serve ... -- granian --workers 1 --uds {socket} (Django: --interface wsgi)

The Django app runs as ASGI under the uvicorn setups and as WSGI under
gunicorn and granian. For every setup x endpoint: check one response, a
warm-up wrk run, wait for a quiet machine, then
`wrk -t2 -c32 -d10s --latency --timeout 5s` while the CPU time of every
process of the setup is read from /proc before and after, and the proxy's
VmRSS is sampled. --rounds N repeats everything N times (setups in a rotated
order each round) and reports the medians.

Stdlib only (Python >= 3.11); needs nginx and wrk (apt-get install -y nginx wrk)
and a venv with bench/requirements.txt. See bench/README.md.

    python3 bench/hop_bench.py --curfew target/release/curfew
    python3 bench/hop_bench.py --only curfew-uvicorn,nginx-uvicorn,plain --duration 3
    python3 bench/hop_bench.py --rounds 3 --write
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attack_bench as ab  # noqa: E402  (wrk output parser, nginx/port helpers)
import http_bench as hb  # noqa: E402  (process cleanup, /proc readers, quiet wait, RESULTS.md writer)

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
SECTION_BEGIN = "<!-- hop_bench:begin -->"
SECTION_END = "<!-- hop_bench:end -->"

SETUPS = ["curfew-uvicorn", "curfew-uvicorn-tcp", "nginx-uvicorn", "uvicorn", "gunicorn", "granian", "curfew-granian"]
LABEL = {
    "curfew-uvicorn": "curfew → 2 uvicorn (fd 3, unix)",
    "curfew-uvicorn-tcp": "curfew → 2 uvicorn (fd 3, TCP)",
    "nginx-uvicorn": "nginx → 2 uvicorn (unix)",
    "uvicorn": "uvicorn --workers 2",
    "gunicorn": "gunicorn -w 2",
    "granian": "granian --workers 2",
    "curfew-granian": "curfew → 2 granian (unix)",
}
CURFEW_SETUPS = {"curfew-uvicorn", "curfew-uvicorn-tcp", "curfew-granian"}
PROXY_SETUPS = {"curfew-uvicorn", "curfew-uvicorn-tcp", "curfew-granian", "nginx-uvicorn"}
# the server the curfew setup runs behind its hop, for the "÷ alone" column
ALONE = {"curfew-uvicorn": "uvicorn", "curfew-uvicorn-tcp": "uvicorn", "curfew-granian": "granian"}
UVICORN_BASED = {"curfew-uvicorn", "curfew-uvicorn-tcp", "nginx-uvicorn", "uvicorn", "gunicorn"}


@dataclass(frozen=True)
class Endpoint:
    name: str
    app: str          # "fastapi" or "django"
    path: str
    desc: str


ENDPOINTS = [
    Endpoint("plain", "fastapi", "/plain", "FastAPI, 5-byte text"),
    Endpoint("json", "fastapi", "/json", "FastAPI, ~10 KB JSON (pydantic response model)"),
    Endpoint("django", "django", "/items", "Django, ORM read of 20 rows on SQLite, JSON"),
    Endpoint("stream", "fastapi", "/stream", "FastAPI, 1 MiB StreamingResponse (16 × 64 KiB)"),
]
EP = {e.name: e for e in ENDPOINTS}
REALISTIC = ["json", "django", "stream"]
APPS = {
    "fastapi": {"asgi": "hop_app:app", "wsgi": None, "health": "/health"},
    "django": {"asgi": "hop_django.asgi:application", "wsgi": "hop_django.wsgi:application",
               "health": "/health"},
}
GUNICORN_DJANGO_THREADS = 4
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
RSS_SAMPLE_S = 0.05

log = hb.log

NGINX_CONF = """\
# nginx as a reverse proxy in front of 2 uvicorn processes on unix sockets:
# Debian's defaults (sendfile, tcp_nopush, keepalive_timeout 65, default proxy
# buffering), 1 worker process, keep-alive to the upstream.
worker_processes 1;
{user_line}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
master_process on;

events {{
  worker_connections 4096;
  use epoll;
}}

http {{
  include {mime_types};
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;

  upstream app {{
{servers}
    keepalive 32;
  }}

  server {{
    listen 127.0.0.1:{port};
    server_name _;

    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_redirect off;
    }}
  }}
}}
"""


# --------------------------------------------------------------------------
# setups
# --------------------------------------------------------------------------

def server_env(args) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ab.STRIP_ENV_EXACT and not k.startswith(("CURFEW_", "GUNICORN_", "UVICORN_", "GRANIAN_"))}
    env["HOP_DJANGO_DB"] = str(args.db)
    env["DJANGO_SETTINGS_MODULE"] = "hop_django.settings"
    return env


def http_get(port: int | None, path: str, uds: Path | None = None, timeout: float = 5.0) -> tuple[int | None, bytes]:
    """GET on a fresh connection: (status, body), (None, b"") on a connection error."""
    try:
        if uds is not None:
            conn = http.client.HTTPConnection("localhost", timeout=timeout)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(timeout)
            s.connect(str(uds))
            conn.sock = s
        else:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return None, b""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path


class Setup:
    """One setup serving one app; each process it starts leads a session of its own."""

    def __init__(self, name: str, app: str, args, tmp: Path, tag: str):
        self.name, self.app, self.args = name, app, args
        self.dir = tmp / tag
        self.dir.mkdir(parents=True)
        self.port = ab.free_port()
        self.procs: list[Proc] = []
        self.problems: list[str] = []

    # -- commands --
    def _uvicorn(self, bind: list[str], workers: int | None = None) -> list[str]:
        v = self.args.venv / "bin"
        argv = [str(v / "uvicorn"), APPS[self.app]["asgi"], *bind]
        if workers:
            argv += ["--workers", str(workers)]
        return argv + ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]

    def _granian(self, bind: list[str], workers: int) -> list[str]:
        v = self.args.venv / "bin"
        if self.app == "django":
            iface = ["--interface", "wsgi", APPS["django"]["wsgi"]]
        else:
            iface = ["--interface", "asgi", "--loop", "uvloop", APPS[self.app]["asgi"]]
        return [str(v / "granian"), "--workers", str(workers), *bind, "--no-ws",
                "--log-level", "warning", *iface]

    def _curfew(self, worker_cmd: list[str], extra: list[str] = ()) -> list[str]:
        return [str(self.args.curfew), "serve", "-b", f"127.0.0.1:{self.port}", *extra,
                "-w", str(self.args.workers), "--worker-concurrency", str(self.args.worker_concurrency),
                "--ready-path", APPS[self.app]["health"], "--worker-log-level", "warn",
                "--control-socket", str(self.dir / "curfew.sock"), *self.args.curfew_arg, "--", *worker_cmd]

    def commands(self) -> list[tuple[str, list[str]]]:
        """(process name, argv) in start order; the public port is self.port."""
        n, p = self.args.workers, str(self.port)
        v = self.args.venv / "bin"
        tcp = ["--host", "127.0.0.1", "--port", p]
        if self.name == "curfew-uvicorn":
            return [("curfew", self._curfew(self._uvicorn(["--fd", "3"])))]
        if self.name == "curfew-uvicorn-tcp":
            # fd 3 on loopback TCP instead of the default Unix socket
            return [("curfew", self._curfew(self._uvicorn(["--fd", "3"]), ["--worker-socket", "fd-tcp"]))]
        if self.name == "curfew-granian":
            return [("curfew", self._curfew(self._granian(["--uds", "{socket}"], 1)))]
        if self.name == "uvicorn":
            return [("uvicorn", self._uvicorn(tcp, workers=n))]
        if self.name == "granian":
            return [("granian", self._granian(tcp, n))]
        if self.name == "gunicorn":
            if self.app == "django":
                kind = ["-k", "gthread", "--threads", str(GUNICORN_DJANGO_THREADS), APPS["django"]["wsgi"]]
            else:
                kind = ["-k", "uvicorn_worker.UvicornWorker", APPS[self.app]["asgi"]]
            return [("gunicorn", [str(v / "gunicorn"), "-w", str(n), "--bind", f"127.0.0.1:{p}",
                                  "--no-control-socket", *kind])]
        if self.name == "nginx-uvicorn":
            out = [(f"uvicorn{i}", self._uvicorn(["--uds", str(self.dir / f"u{i}.sock")])) for i in range(n)]
            return out + [("nginx", [self.args.nginx, "-p", str(self.dir / "nginx"),
                                     "-c", str(self.dir / "nginx" / "nginx.conf"),
                                     "-e", str(self.dir / "nginx" / "error.log")])]
        raise ValueError(self.name)

    # -- lifecycle --
    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log_path = self.dir / f"{name}.log"
        with open(log_path, "wb") as out:
            p = subprocess.Popen(argv, cwd=BENCH_DIR, env=server_env(self.args), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        hb._SESSIONS.add(p.pid)
        hb._POPEN_PIDS.add(p.pid)
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{self.name}: {p.name} exited with {p.popen.returncode} at start:\n"
                                   f"{ab.tail(p.log_path)}")

    def start(self) -> float:
        t0 = time.monotonic()
        deadline = t0 + READY_TIMEOUT_S
        health = APPS[self.app]["health"]
        for name, argv in self.commands():
            if name == "nginx":
                # nginx starts once every uvicorn answers on its socket
                for i in range(self.args.workers):
                    sock = self.dir / f"u{i}.sock"
                    while http_get(None, health, uds=sock, timeout=1.0)[0] != 200:
                        self._check_alive()
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{self.name}: uvicorn did not answer on {sock}")
                        time.sleep(0.05)
                self._write_nginx_conf()
            self._spawn(name, argv)
        while time.monotonic() < deadline:
            self._check_alive()
            if http_get(self.port, health, timeout=1.0)[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: GET {health} not 200 within {READY_TIMEOUT_S:g} s:\n"
                           + "\n".join(ab.tail(p.log_path) for p in self.procs))

    def _write_nginx_conf(self) -> None:
        ng = self.dir / "nginx"
        ng.mkdir(exist_ok=True)
        servers = "\n".join(f"    server unix:{self.dir / f'u{i}.sock'} fail_timeout=0;"
                            for i in range(self.args.workers))
        (ng / "nginx.conf").write_text(NGINX_CONF.format(
            d=ng, servers=servers, port=self.port, user_line=ab.nginx_user_line(),
            mime_types=self.args.nginx_mime_types))

    def pids(self) -> dict[str, list[int]]:
        """{'proxy': [...], 'all': [...]}: the processes of this setup now."""
        procs = hb.all_procs()
        allp: list[int] = []
        proxy: list[int] = []
        for p in self.procs:
            tree = [p.popen.pid] + hb.descendants(p.popen.pid, procs)
            allp += tree
            if p.name == "nginx":
                proxy += tree
            elif p.name == "curfew":
                proxy.append(p.popen.pid)
        return {"proxy": proxy, "all": sorted(set(allp))}

    def master_pid(self) -> int | None:
        for p in self.procs:
            if p.name in ("curfew", "nginx"):
                return p.popen.pid
        return None

    def alive_problems(self) -> list[str]:
        return [f"{p.name} exited with {p.popen.returncode}" for p in self.procs if p.popen.poll() is not None]

    def stop(self) -> None:
        """SIGTERM to each master (nginx before its uvicorns), then SIGKILL what is left of their sessions."""
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
                try:
                    p.popen.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.problems.append(f"{p.name} still running {STOP_TIMEOUT_S:g} s after SIGTERM: SIGKILL")
            hb.kill_session(p.popen.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
            hb._POPEN_PIDS.discard(p.popen.pid)
        hb.reap_orphans()

    def log_lines(self) -> list[str]:
        pat = re.compile(r"\b(WARN|WARNING|ERROR|CRITICAL|Traceback)\b|\[(warn|error|crit|alert|emerg)\]")
        files = [p.log_path for p in self.procs]
        if self.name == "nginx-uvicorn":
            files.append(self.dir / "nginx" / "error.log")
        out = []
        for f in files:
            with contextlib.suppress(OSError):
                for line in f.read_text(errors="replace").splitlines():
                    if pat.search(line):
                        out.append(f"{f.name}: {line.strip()}")
        return out


# --------------------------------------------------------------------------
# checks: the right answer, and uvloop + httptools really in use
# --------------------------------------------------------------------------

def check_response(ep: Endpoint, port: int) -> str | None:
    """None when GET ep.path answers what the app should, else what is wrong."""
    status, body = http_get(port, ep.path, timeout=10.0)
    if status != 200:
        return f"GET {ep.path}: status {status}"
    try:
        if ep.name == "plain":
            ok = body == b"hello"
        elif ep.name == "json":
            data = json.loads(body)
            ok = isinstance(data, list) and len(data) == 40 and 9000 <= len(body) <= 12000
        elif ep.name == "stream":
            ok = len(body) == 1 << 20
        elif ep.name == "django":
            ok = json.loads(body).get("count") == 20
        else:
            ok = False
    except ValueError:
        ok = False
    return None if ok else f"GET {ep.path}: unexpected body ({len(body)} bytes: {body[:80]!r})"


def check_stack(setup: Setup) -> tuple[str, str | None]:
    """Ask /info on fresh connections (so that every worker answers some) which
    event loop and HTTP parser serve the FastAPI app: (summary, problem)."""
    seen: dict[int, tuple[str, tuple[str, ...]]] = {}
    for _ in range(6 * setup.args.workers):
        status, body = http_get(setup.port, "/info", timeout=5.0)
        if status != 200:
            return "?", f"GET /info: status {status}"
        d = json.loads(body)
        seen[d["pid"]] = (d["loop"], tuple(h.rsplit(".", 1)[-1] for h in d["http"]))
    kinds = sorted(set(seen.values()))
    summary = "; ".join(f"{loop}{' + ' + ','.join(h) if h else ''}" for loop, h in kinds)
    summary += f" ({len(seen)} worker pid(s) answered)"
    problem = None
    if not all(loop.startswith("uvloop") for loop, _ in kinds):
        problem = f"not every worker runs uvloop: {summary}"
    elif setup.name in UVICORN_BASED and not all(h == ("httptools_impl",) for _, h in kinds):
        problem = f"not every uvicorn worker parses HTTP with httptools: {summary}"
    return summary, problem


# --------------------------------------------------------------------------
# one measurement
# --------------------------------------------------------------------------

def proc_cpu(pids: list[int]) -> dict[int, float]:
    return {p: hb.proc_cpu_s(p) for p in pids}


def rss_anon_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) in KiB; (0, 0) once the process is gone."""
    vm = anon = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                vm = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    return vm, anon


class RssSampler:
    """Max VmRSS and max RssAnon (KiB) of the curfew process / the sums over
    nginx's processes, sampled in a thread. VmRSS includes the resident pages
    of the mapped binary (file-backed, shared with the page cache); RssAnon is
    the process's own heap and stacks."""

    def __init__(self, pids: list[int]):
        self.pids, self.max_kb, self.max_anon_kb = pids, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            vals = [rss_anon_kb(p) for p in self.pids]
            self.max_kb = max(self.max_kb, sum(v for v, _ in vals))
            self.max_anon_kb = max(self.max_anon_kb, sum(a for _, a in vals))
            self._stop.wait(RSS_SAMPLE_S)

    def __enter__(self):
        if self.pids:
            self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._t.is_alive():
            self._t.join(5)


def wrk(args, port: int, path: str, seconds: float) -> dict:
    secs = max(1, int(round(seconds)))
    argv = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{secs}s", "--latency",
            "--timeout", f"{args.wrk_timeout}s", f"http://127.0.0.1:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    res = ab.parse_wrk(p.stdout)
    res["wrk_rc"] = p.returncode
    res["wrk_output"] = p.stdout + p.stderr
    return res


@dataclass
class Run:
    rps: float
    p50: float | None
    p99: float | None
    requests: int
    errors: int
    error_detail: str
    proxy_us: float | None     # proxy process(es) CPU µs per request
    server_us: float           # every process of the setup, µs per request
    wrk_us: float              # wrk's own CPU, µs per request
    other_pct: float           # CPU of unrelated processes during the run, % of all CPUs
    proxy_rss_kb: int | None
    proxy_anon_kb: int | None


def measure(setup: Setup, ep: Endpoint, args) -> Run:
    log(f"  {ep.name}: warm-up {args.warmup:g} s")
    w = wrk(args, setup.port, ep.path, args.warmup)
    if w["requests"] == 0:
        raise RuntimeError(f"warm-up: no response at all:\n{w['wrk_output'][-800:]}")
    if args.quiet_wait > 0:
        frac = hb.wait_for_quiet(args.quiet_wait, args.quiet_threshold)
        if frac >= args.quiet_threshold:
            log(f"  machine still {frac * 100:.0f}% busy after waiting {args.quiet_wait:g} s; measuring anyway")
    pids = setup.pids()
    cpu0 = proc_cpu(pids["all"])
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = hb.cpu_busy_s(), time.monotonic()
    with RssSampler(pids["proxy"]) as rss:
        w = wrk(args, setup.port, ep.path, args.duration)
    busy1, t1 = hb.cpu_busy_s(), time.monotonic()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu1 = proc_cpu(pids["all"])
    # a process that exited during the run reads 0: count no negative delta
    delta = {p: max(0.0, cpu1[p] - cpu0[p]) for p in pids["all"]}
    wrk_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    server_cpu = sum(delta.values())
    other = (busy1 - busy0) - server_cpu - wrk_cpu
    n = max(1, w["requests"])
    proxy_cpu = sum(delta[p] for p in pids["proxy"]) if pids["proxy"] else None
    detail = ", ".join(f"{k} {w[k]}" for k in ("non2xx", "connect", "read", "write", "timeout") if w[k])
    if w["wrk_rc"] != 0:
        detail = (detail + ", " if detail else "") + f"wrk exit code {w['wrk_rc']}"
    return Run(
        rps=w["rps"], p50=w["p50_ms"], p99=w["p99_ms"], requests=w["requests"],
        errors=w["errors"] + (1 if w["wrk_rc"] != 0 else 0), error_detail=detail,
        proxy_us=None if proxy_cpu is None else proxy_cpu * 1e6 / n,
        server_us=server_cpu * 1e6 / n, wrk_us=wrk_cpu * 1e6 / n,
        other_pct=max(0.0, 100.0 * other / ((t1 - t0) * hb.NCPU)),
        proxy_rss_kb=rss.max_kb if pids["proxy"] else None,
        proxy_anon_kb=rss.max_anon_kb if pids["proxy"] else None,
    )


@dataclass
class Cell:
    setup: str
    endpoint: str
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stack: str = ""

    @property
    def failed(self) -> bool:
        return not self.runs or any(r.errors for r in self.runs) or bool(self.problems)

    def med(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(vals) if vals else None

    @property
    def rss_max_kb(self) -> int | None:
        vals = [r.proxy_rss_kb for r in self.runs if r.proxy_rss_kb is not None]
        return max(vals) if vals else None

    @property
    def anon_max_kb(self) -> int | None:
        vals = [r.proxy_anon_kb for r in self.runs if r.proxy_anon_kb is not None]
        return max(vals) if vals else None


def run_setup_app(setup_name: str, app: str, eps: list[Endpoint], args, tmp: Path, rnd: int,
                  cells: dict, extra_notes: list[str]) -> None:
    setup = Setup(setup_name, app, args, tmp, f"r{rnd}-{setup_name}-{app}")
    try:
        boot = setup.start()
        log(f"{LABEL[setup_name]} / {app}: up after {boot:.1f} s on :{setup.port}")
        stack = ""
        if app == "fastapi":
            stack, problem = check_stack(setup)
            log(f"  /info: {stack}")
            if problem:
                raise RuntimeError(problem)
        for ep in eps:
            cell = cells.setdefault((setup_name, ep.name), Cell(setup_name, ep.name))
            cell.stack = cell.stack or stack
            bad = check_response(ep, setup.port)
            if bad:
                cell.problems.append(f"round {rnd + 1}: {bad}")
                log(f"  {ep.name}: {bad}")
                continue
            try:
                r = measure(setup, ep, args)
            except Exception as e:
                cell.problems.append(f"round {rnd + 1}: {e}")
                log(f"  {ep.name}: error {e}")
                continue
            cell.runs.append(r)
            if r.errors:
                cell.problems.append(f"round {rnd + 1}: wrk saw {r.errors} error(s): {r.error_detail}")
            log(f"  {ep.name}: {r.rps:,.0f} req/s p50 {fmt_ms(r.p50)} p99 {fmt_ms(r.p99)} ms, "
                f"proxy {fmt_us(r.proxy_us)} µs/req, all {r.server_us:.0f} µs/req, "
                f"other {r.other_pct:.0f}% CPU" + (f", ERRORS {r.error_detail}" if r.errors else ""))
        for p in setup.alive_problems():
            for ep in eps:
                cells[(setup_name, ep.name)].problems.append(f"round {rnd + 1}: {p}")
    except Exception as e:
        msg = str(e).replace("\n", " | ")[:1500]
        log(f"{LABEL[setup_name]} / {app}: FAILED: {e}")
        for ep in eps:
            cells.setdefault((setup_name, ep.name), Cell(setup_name, ep.name)).problems.append(
                f"round {rnd + 1}: {msg}")
    finally:
        setup.stop()
        for p in setup.problems:
            extra_notes.append(f"{LABEL[setup_name]} / {app}, round {rnd + 1}: {p}")
        lines = setup.log_lines()
        if lines:
            extra_notes.append(f"{LABEL[setup_name]} / {app}, round {rnd + 1}: {len(lines)} WARN/ERROR log "
                               f"line(s), first: `{lines[0][:240]}`")


# --------------------------------------------------------------------------
# table and goals
# --------------------------------------------------------------------------

fmt_ms = ab.fmt_ms


def fmt_us(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def rps_of(cells: dict, setup: str, ep: str) -> float | None:
    c = cells.get((setup, ep))
    return c.med("rps") if c and c.runs and not c.failed else None


def build_table(cells: dict, setups: list[str], eps: list[Endpoint]) -> str:
    head = ("| endpoint | setup | req/s | p50 ms | p99 ms | proxy CPU µs/req | all server CPU µs/req "
            "| proxy max RSS (anon) MiB | wrk errors | other CPU % | ÷ nginx+uvicorn | ÷ same server alone | ÷ fastest |")
    rows = [head, "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for ep in eps:
        best = max((v for s in setups if (v := rps_of(cells, s, ep.name))), default=None)
        for s in setups:
            c = cells.get((s, ep.name))
            if c is None:
                continue
            if not c.runs:
                rows.append(f"| {ep.name} | {LABEL[s]} | FAILED | | | | | | see notes | | | | |")
                continue
            rps = c.med("rps")
            errs = sum(r.errors for r in c.runs)
            vs_nginx = (ratio(rps, rps_of(cells, "nginx-uvicorn", ep.name))
                        if s in ("curfew-uvicorn", "curfew-uvicorn-tcp") else "")
            vs_alone = ratio(rps, rps_of(cells, ALONE[s], ep.name)) if s in ALONE else ""
            flag = " (FAILED)" if c.failed else ""
            rss = f"{c.rss_max_kb / 1024:.1f} ({(c.anon_max_kb or 0) / 1024:.1f})" if c.rss_max_kb else "—"
            rows.append(
                f"| {ep.name} | {LABEL[s]} | {rps:,.0f}{flag} | {fmt_ms(c.med('p50'))} | {fmt_ms(c.med('p99'))} "
                f"| {fmt_us(c.med('proxy_us'))} | {fmt_us(c.med('server_us'))} | {rss} | {errs} "
                f"| {c.med('other_pct'):.0f} | {vs_nginx} | {vs_alone} | {ratio(rps, best) if best else '—'} |")
    return "\n".join(rows)


def goals(cells: dict, eps: list[Endpoint]) -> list[str]:
    names = {e.name for e in eps}
    out = []

    def cell_ok(s: str, e: str) -> Cell | None:
        c = cells.get((s, e))
        return c if c and c.runs and not c.failed else None

    # 1. proxy CPU per request (each curfew hop: fd 3 unix, the same as nginx's; and fd 3 TCP)
    for cs in ("curfew-uvicorn-tcp", "curfew-uvicorn"):
        parts, ok_all, have = [], True, False
        for e in [x.name for x in eps]:
            c, n = cell_ok(cs, e), cell_ok("nginx-uvicorn", e)
            if c and n:
                have = True
                cu, nu = c.med("proxy_us"), n.med("proxy_us")
                ok_all &= cu <= nu
                parts.append(f"{e} {fmt_us(cu)} vs {fmt_us(nu)}")
        if have:
            out.append(f"- proxy CPU per request, {LABEL[cs]} ≤ nginx (µs/req, same uvicorn workers): "
                       f"{'; '.join(parts)}: **{'PASS' if ok_all else 'FAIL'}**")
        c = cell_ok(cs, "plain")
        if c:
            v = c.med("proxy_us")
            out.append(f"- aim: {LABEL[cs]}: proxy CPU ≤ 30 µs per request on /plain: {fmt_us(v)} µs: "
                       f"**{'PASS' if v <= 30 else 'FAIL'}**")
    # 2. trivial endpoint
    ng, uv = (rps_of(cells, s, "plain") for s in ("nginx-uvicorn", "uvicorn"))
    if "plain" in names:
        for cs in ("curfew-uvicorn-tcp", "curfew-uvicorn"):
            cu = rps_of(cells, cs, "plain")
            if not cu:
                continue
            out.append(f"- /plain: {LABEL[cs]} ≥ nginx+uvicorn: "
                       + (f"{cu:,.0f} vs {ng:,.0f} req/s ({cu / ng:.2f}×): **{'PASS' if cu >= ng else 'FAIL'}**"
                          if ng else "— (not run or failed)"))
            out.append(f"- /plain: {LABEL[cs]} ≥ 0.75 × uvicorn alone: "
                       + (f"{cu:,.0f} vs {uv:,.0f} req/s ({cu / uv:.2f}×): **{'PASS' if cu >= 0.75 * uv else 'FAIL'}**"
                          if uv else "— (not run or failed)"))
    # 3. realistic endpoints within 5 % of the fastest
    for e in REALISTIC:
        if e not in names:
            continue
        mine = {s: v for s in CURFEW_SETUPS if (v := rps_of(cells, s, e))}
        others = {s: v for s in SETUPS if s not in CURFEW_SETUPS and (v := rps_of(cells, s, e))}
        if not mine or not others:
            out.append(f"- /{e}: curfew within 5 % of the fastest server: — (not run or failed)")
            continue
        bs, bv = max(mine.items(), key=lambda kv: kv[1])
        fs, fv = max(others.items(), key=lambda kv: kv[1])
        out.append(f"- {EP[e].path} ({e}): best curfew setup ({LABEL[bs]}, {bv:,.0f} req/s) ≥ 0.95 × the fastest "
                   f"other ({LABEL[fs]}, {fv:,.0f} req/s): {bv / fv:.2f}×: **{'PASS' if bv >= 0.95 * fv else 'FAIL'}**")
    # 4. master RSS under load
    rss = [(c.rss_max_kb, c.anon_max_kb or 0, s, e) for (s, e), c in cells.items()
           if s in CURFEW_SETUPS and c.rss_max_kb]
    if rss:
        kb, anon, s, e = max(rss)
        top_anon = max(rss, key=lambda x: x[1])
        out.append(f"- curfew master RSS under load < 10 MB: max VmRSS {kb / 1024:.1f} MiB (sampled every "
                   f"{RSS_SAMPLE_S * 1000:.0f} ms during each run; highest: {LABEL[s]}, {e}): "
                   f"**{'PASS' if kb < 10 * 1024 else 'FAIL'}**; RssAnon (heap and stacks; VmRSS also counts the "
                   f"resident pages of the mapped binary): max {top_anon[1] / 1024:.1f} MiB ({LABEL[top_anon[2]]}, {top_anon[3]})")
    # how far to trust the req/s above
    disturbed = sorted(f"{LABEL[s]} / {e} ({c.med('other_pct'):.0f} %)" for (s, e), c in cells.items()
                       if c.runs and c.med("other_pct") > 10)
    if disturbed:
        out.append(f"- caveat: {len(disturbed)} of {len(cells)} rows were disturbed by other processes (they used "
                   f"> 10 % of the CPUs during the run), so their req/s and latencies, and the req/s goals, are "
                   f"unreliable; CPU per request holds up better: {'; '.join(disturbed)}")
    return out


def notes(cells: dict, extra: list[str]) -> list[str]:
    out = []
    for (s, e), c in cells.items():
        for p in c.problems:
            out.append(f"- {LABEL[s]} / {e}: {p}")
    out += [f"- {x}" for x in extra]
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def check_tools(args, setups: list[str]) -> None:
    for tool in ("wrk",) + (("nginx",) if "nginx-uvicorn" in setups else ()):
        path = getattr(args, tool)
        found = shutil.which(path) or (Path(path).exists() and path)
        if not found:
            sys.exit(f"missing: {tool}; install with: apt-get install -y nginx wrk (or pass --{tool} PATH)")
        setattr(args, tool, str(found))
    if CURFEW_SETUPS & set(setups) and not Path(args.curfew).is_file():
        sys.exit(f"no curfew binary at {args.curfew}: cargo build --release (or pass --curfew PATH)")
    py = args.venv / "bin" / "python"
    mods = "uvicorn, uvloop, httptools, fastapi, django, gunicorn, uvicorn_worker, granian"
    chk = subprocess.run([str(py), "-c", f"import {mods}"], capture_output=True, text=True)
    if chk.returncode != 0:
        sys.exit(f"the venv {args.venv} lacks a module ({chk.stderr.strip().splitlines()[-1:]}); "
                 f"bash scripts/python-env.sh && .venv/bin/pip install -r bench/requirements.txt")


def versions(args) -> dict:
    code = ("import importlib.metadata as m, sys\n"
            "for n in ('uvicorn','uvloop','httptools','gunicorn','uvicorn-worker','granian','fastapi',"
            "'starlette','pydantic','django'):\n"
            "    try: print(n, m.version(n))\n"
            "    except Exception: print(n, '-')\n"
            "print('python', sys.version.split()[0])\n")
    out = hb.sh([str(args.venv / "bin" / "python"), "-c", code])
    v = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    v.update(ab.tool_versions(args))
    return v


def render_section(table: str, goal_lines: list[str], note_lines: list[str], args, cmdline: str,
                   vers: dict, load0: str, load1: str, stacks: dict, elapsed: float) -> str:
    mach = hb.machine_info()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stack_line = "; ".join(f"{LABEL[s]}: {v}" for s, v in stacks.items() if v)
    parts = [
        SECTION_BEGIN,
        "## Proxy hop: curfew vs nginx / uvicorn / gunicorn / granian (wrk, realistic endpoints)",
        "",
        f"- date: {now}; run took {elapsed / 60:.1f} min",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}; "
        f"load average at the start: {load0}, at the end: {load1}",
        f"- command: `{cmdline}`",
        f"- versions: {vers.get('curfew')}; uvicorn {vers.get('uvicorn')}, uvloop {vers.get('uvloop')}, "
        f"httptools {vers.get('httptools')}, gunicorn {vers.get('gunicorn')}, uvicorn-worker "
        f"{vers.get('uvicorn-worker')}, granian {vers.get('granian')}, fastapi {vers.get('fastapi')}, "
        f"starlette {vers.get('starlette')}, pydantic {vers.get('pydantic')}, django {vers.get('django')}, "
        f"python {vers.get('python')}, nginx {vers.get('nginx')}, wrk {vers.get('wrk')}",
        f"- load: `wrk -t{args.threads} -c{args.connections} -d{max(1, int(round(args.duration)))}s --latency "
        f"--timeout {args.wrk_timeout}s` after a {args.warmup:g} s warm-up and a wait (≤ {args.quiet_wait:g} s) "
        f"for the other processes to use < {args.quiet_threshold * 100:g}% of the CPUs; "
        f"{args.rounds} round(s), medians; wrk runs on the same CPUs",
        f"- every setup has {args.workers} worker processes; curfew `--worker-concurrency "
        f"{args.worker_concurrency}`; the Django app is ASGI under the uvicorn setups, WSGI under granian "
        f"(its default blocking threads) and gunicorn (`-k gthread --threads {GUNICORN_DJANGO_THREADS}`)",
        "- endpoints: " + "; ".join(f"`{e.name}` {e.path}: {e.desc}" for e in ENDPOINTS),
        f"- event loop / HTTP parser reported by the FastAPI workers (/info): {stack_line or '—'}",
        "- proxy CPU: utime+stime from /proc of the curfew process, or of nginx's master and worker, "
        "over the run ÷ requests; all server CPU: the same over every process of the setup (proxy + "
        "workers; not wrk); other CPU: the machine's busy time minus the setup's and wrk's, in % of all "
        "CPUs (above ~10 % the row is disturbed)",
        "",
        table,
        "",
        "Goals (issue 12):",
        "",
        *goal_lines,
    ]
    if note_lines:
        parts += ["", "Notes:", ""] + note_lines
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


def default_curfew() -> str:
    tgt = os.environ.get("CARGO_TARGET_DIR")
    if tgt and (Path(tgt) / "release" / "curfew").exists():
        return str(Path(tgt) / "release" / "curfew")
    return str(REPO / "target" / "release" / "curfew")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curfew", default=default_curfew(),
                    help="curfew binary (default: $CARGO_TARGET_DIR/release/curfew, else target/release/curfew)")
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("CURFEW_VENV") or REPO / ".venv"),
                    help="venv with bench/requirements.txt (default: .venv or $CURFEW_VENV)")
    ap.add_argument("--nginx", default="nginx")
    ap.add_argument("--nginx-mime-types", default="/etc/nginx/mime.types")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--workers", type=int, default=2, help="worker processes in every setup (default 2)")
    ap.add_argument("--worker-concurrency", type=int, default=32, help="curfew's --worker-concurrency (32)")
    ap.add_argument("--curfew-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for `curfew serve` (repeatable), e.g. --curfew-arg=--response-buffering=false")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    ap.add_argument("--duration", type=float, default=10.0, help="wrk -d seconds per measurement (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up wrk seconds before each (default 2)")
    ap.add_argument("--wrk-timeout", type=int, default=5, help="wrk --timeout seconds (default 5)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything N times, report medians (default 1)")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="before each measurement, wait up to this many seconds for the machine to be quiet "
                         "(default 10; 0 = don't)")
    ap.add_argument("--quiet-threshold", type=float, default=0.10,
                    help="fraction of all CPUs that counts as quiet (default 0.10)")
    ap.add_argument("--only", default="",
                    help=f"comma-separated setups ({', '.join(SETUPS)}) and/or endpoints "
                         f"({', '.join(e.name for e in ENDPOINTS)}); default all")
    ap.add_argument("--json", metavar="PATH", help="write every run's numbers to PATH")
    ap.add_argument("--write", action="store_true", help="record the results in bench/RESULTS.md (section hop_bench)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, nginx config, SQLite file)")
    args = ap.parse_args()
    args.curfew = str(Path(args.curfew).resolve())
    args.venv = args.venv.resolve()
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"

    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in SETUPS and x not in EP]
    if bad:
        sys.exit(f"--only: unknown {', '.join(bad)} (setups: {', '.join(SETUPS)}; "
                 f"endpoints: {', '.join(EP)})")
    setups = [s for s in SETUPS if s in only] or SETUPS
    eps = [e for e in ENDPOINTS if e.name in only] or ENDPOINTS
    check_tools(args, setups)
    hb.become_subreaper()
    signal.signal(signal.SIGINT, hb._on_signal)
    signal.signal(signal.SIGTERM, hb._on_signal)

    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/hop_bench.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    vers = versions(args)
    tmp = Path(tempfile.mkdtemp(prefix="curfew-hop-bench-"))
    args.db = tmp / "django.sqlite3"
    log(f"curfew {vers['curfew']}; logs in {tmp}; load average {load0}")
    if any(e.app == "django" for e in eps):
        env = server_env(args)
        out = subprocess.run([str(args.venv / "bin" / "python"), "-m", "hop_django.setup_db"], cwd=BENCH_DIR,
                             env=env, capture_output=True, text=True, timeout=120)
        if out.returncode != 0 or out.stdout.strip() != "200":
            sys.exit(f"creating the Django database failed:\n{out.stdout}{out.stderr}")
        log(f"Django database {args.db}: migrated, 200 items")

    cells: dict[tuple[str, str], Cell] = {}
    extra: list[str] = []
    t_start = time.monotonic()
    try:
        for rnd in range(args.rounds):
            order = setups[rnd % len(setups):] + setups[:rnd % len(setups)]
            for s in order:
                for app in ("fastapi", "django"):
                    app_eps = [e for e in eps if e.app == app]
                    if app_eps:
                        run_setup_app(s, app, app_eps, args, tmp, rnd, cells, extra)
    finally:
        hb.kill_all_sessions()
    elapsed = time.monotonic() - t_start
    load1 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log(f"done in {elapsed:.0f} s; load average {load1}")

    stacks = {s: next((c.stack for (cs, _), c in cells.items() if cs == s and c.stack), "") for s in setups}
    table = build_table(cells, setups, eps)
    goal_lines = goals(cells, eps)
    note_lines = notes(cells, extra)
    print()
    print(table)
    print("\nGoals (issue 12):\n")
    print("\n".join(goal_lines))
    if note_lines:
        print("\nNotes:\n")
        print("\n".join(note_lines))
    failed = sorted({f"{LABEL[s]} / {e}" for (s, e), c in cells.items() if c.failed})
    if args.json:
        raw = {"command": cmdline, "versions": vers, "load_average": [load0, load1],
               "cells": [{"setup": c.setup, "endpoint": c.endpoint, "stack": c.stack, "problems": c.problems,
                          "runs": [r.__dict__ for r in c.runs]} for c in cells.values()]}
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.write:
        hb.write_results(render_section(table, goal_lines, note_lines, args, cmdline, vers, load0, load1,
                                        stacks, elapsed), SECTION_BEGIN, SECTION_END)
    if args.keep:
        log(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        print(f"\nFAILED (no clean measurement: a setup that did not start, a wrong answer, or wrk errors): "
              f"{'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
