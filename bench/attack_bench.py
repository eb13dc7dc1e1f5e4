#!/usr/bin/env python3
"""Normal traffic under attack: curfew alone vs gunicorn alone vs nginx + gunicorn.

The same Flask app (bench/attack_app.py) with 2 sync gunicorn workers in all
three setups:

  gunicorn  gunicorn -w 2 --bind 127.0.0.1:P
  nginx     nginx (Debian's package, 1 worker, gunicorn's documented config,
            default proxy buffering) -> gunicorn -w 2 --bind unix:<tmp>/gunicorn.sock
  curfew    curfew serve -b 127.0.0.1:P -w 2 --worker-concurrency 1
            -- gunicorn --workers 1 --no-control-socket attack_app:app
            (fd 3, a Unix socket: the hop nginx has)
  curfew-tcp  the same with --worker-socket fd-tcp (fd 3 on loopback TCP)

For every attack x setup (a fresh setup each time): start it, start the
attack (the script's own asyncio clients, loopback only), wait until the
attack is in place, then measure normal traffic with
`wrk -t1 -c8 -dNs --latency --timeout 2s http://127.0.0.1:P/`, stop the attack
and tear the setup down (SIGTERM, then SIGKILL to every process of its
sessions; the port must be free again).

Attacks: none; slowloris (1,000 connections sending a request head a byte
every 3 s); slow-upload (50 POSTs with Content-Length, 1 byte per 100 ms);
slow-read (50 GETs of a 1 MiB response that are never read); bad-chunk
(3 clients sending chunked bodies with an invalid chunk size, in a loop).

Stdlib only (Python >= 3.11); needs nginx and wrk (apt-get install -y nginx wrk)
and a venv with gunicorn and flask. See bench/README.md.

    python3 bench/attack_bench.py --curfew target/release/curfew
    python3 bench/attack_bench.py --seconds 2 --only curfew,nginx,slowloris --json out.json
    python3 bench/attack_bench.py --rounds 5 --only curfew,nginx,none   (medians of 5 rounds)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import http.client
import json
import os
import random
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench as hb  # noqa: E402  (process cleanup, machine info, RESULTS.md writer)

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
SECTION_BEGIN = "<!-- attack_bench:begin -->"
SECTION_END = "<!-- attack_bench:end -->"

SETUPS = ["gunicorn", "nginx", "curfew", "curfew-tcp"]
LABEL = {"gunicorn": "gunicorn alone", "nginx": "nginx + gunicorn", "curfew": "curfew alone",
         "curfew-tcp": "curfew alone (fd 3 TCP)"}
CURFEW_SETUPS = ("curfew", "curfew-tcp")
ATTACKS = ["none", "slowloris", "slow-upload", "slow-read", "bad-chunk"]
ATTACK_DESC = {
    "none": "no attack (baseline)",
    "slowloris": "1,000 slowloris connections (request head, a byte every 3 s)",
    "slow-upload": "50 slow uploaders (POST, Content-Length 1 MB, 1 byte per 100 ms)",
    "slow-read": "50 slow readers (GET of 1 MiB, never read, 4 KiB receive buffer)",
    "bad-chunk": "bad-chunk flood (3 clients, chunked bodies with an invalid chunk size, in a loop)",
}

WRK_CONNECTIONS = 8
WRK_TIMEOUT_S = 2
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
STRIP_ENV_EXACT = {"WEB_CONCURRENCY", "PORT", "GUNICORN_CMD_ARGS", "LISTEN_FDS", "LISTEN_PID",
                   "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

log = hb.log


# --------------------------------------------------------------------------
# setups
# --------------------------------------------------------------------------

NGINX_CONF = """\
# nginx in front of gunicorn as gunicorn's docs recommend (docs/deploy: "Nginx
# Configuration"), with paths in a temp dir; default proxy (and request) buffering.
worker_processes 1;
{user_line}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
master_process on;

events {{
  # gunicorn's example has 1024 "increase if you have lots of clients": 1,000
  # slowloris connections (plus their upstream halves) would exhaust it.
  worker_connections 4096;
  accept_mutex off;
  use epoll;
}}

http {{
  include {mime_types};
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;

  upstream app_server {{
    server unix:{sock} fail_timeout=0;
  }}

  server {{
    listen 127.0.0.1:{port} deferred;
    client_max_body_size 4G;
    server_name _;
    keepalive_timeout 5;

    location / {{
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Host $http_host;
      proxy_redirect off;
      proxy_pass http://app_server;
    }}
  }}
}}
"""


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k not in STRIP_ENV_EXACT and not k.startswith(("CURFEW_", "GUNICORN_"))}


def free_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not port_in_use(port):
            return port
    raise RuntimeError("no free port")


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False


def get_status(port: int, path: str = "/", timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def unix_get_status(path: Path) -> int | None:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2.0)
            s.connect(str(path))
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            m = re.match(rb"HTTP/1\.[01] (\d{3})", s.recv(64))
            return int(m.group(1)) if m else None
    except OSError:
        return None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path


class Setup:
    """One running setup: its processes each lead a session of their own."""

    def __init__(self, name: str, args, tmp: Path, tag: str):
        self.name, self.args, self.tag = name, args, tag
        self.dir = tmp / tag
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.procs: list[Proc] = []
        self.problems: list[str] = []

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log_path = self.dir / f"{name}.log"
        with open(log_path, "wb") as out:
            p = subprocess.Popen(argv, cwd=BENCH_DIR, env=clean_env(), stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        hb._SESSIONS.add(p.pid)
        hb._POPEN_PIDS.add(p.pid)
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def start(self) -> float:
        gunicorn = str(self.args.venv / "bin" / "gunicorn")
        app = "attack_app:app"
        t0 = time.monotonic()
        if self.name == "gunicorn":
            self._spawn("gunicorn", [gunicorn, "-w", "2", "--bind", f"127.0.0.1:{self.port}",
                                     "--no-control-socket", app])
        elif self.name == "nginx":
            sock = self.dir / "gunicorn.sock"
            self._spawn("gunicorn", [gunicorn, "-w", "2", "--bind", f"unix:{sock}",
                                     "--no-control-socket", app])
            # nginx starts once gunicorn answers on its socket (else its first
            # proxied requests would fail with a [crit] connect() line)
            deadline = t0 + READY_TIMEOUT_S
            while unix_get_status(sock) != 200:
                if self.procs[0].popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx: gunicorn did not answer on {sock}:\n"
                                       f"{tail(self.procs[0].log_path)}")
                time.sleep(0.05)
            ng = self.dir / "nginx"
            ng.mkdir()
            conf = ng / "nginx.conf"
            conf.write_text(NGINX_CONF.format(d=ng, sock=sock, port=self.port, user_line=nginx_user_line(),
                                              mime_types=self.args.nginx_mime_types))
            self._spawn("nginx", [self.args.nginx, "-p", str(ng), "-c", str(conf),
                                  "-e", str(ng / "error.log")])
        elif self.name in CURFEW_SETUPS:
            # curfew-tcp: fd 3 on loopback TCP instead of the default Unix
            # socket (a connection per request: a TCP handshake costs more).
            tcp = ["--worker-socket", "fd-tcp"] if self.name == "curfew-tcp" else []
            self._spawn("curfew", [str(self.args.curfew), "serve", "-b", f"127.0.0.1:{self.port}", *tcp,
                                   "-w", "2", "--worker-concurrency", "1",
                                   "--control-socket", str(self.dir / "curfew.sock"),
                                   "--", gunicorn, "--workers", "1", "--no-control-socket", app])
        else:
            raise ValueError(self.name)
        deadline = t0 + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.popen.poll() is not None:
                    raise RuntimeError(f"{self.name}: {p.name} exited with {p.popen.returncode} "
                                       f"at start:\n{tail(p.log_path)}")
            if get_status(self.port, "/", timeout=1.0) == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: GET / not 200 within {READY_TIMEOUT_S:g} s:\n"
                           + "\n".join(tail(p.log_path) for p in self.procs))

    def alive(self) -> list[str]:
        return [f"{p.name} exited with {p.popen.returncode}" for p in self.procs
                if p.popen.poll() is not None]

    def stop(self) -> dict:
        """SIGTERM to each master (nginx before its gunicorn), wait, then SIGKILL
        whatever is left of their sessions; check that the port is free."""
        out = {"exit": {}, "stop_s": {}, "leftovers": 0}
        for p in reversed(self.procs):
            t0 = time.monotonic()
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.popen.send_signal(signal.SIGTERM)
                try:
                    p.popen.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.problems.append(f"{p.name} still running {STOP_TIMEOUT_S:g} s after SIGTERM: SIGKILL")
            out["stop_s"][p.name] = round(time.monotonic() - t0, 3)
            left = hb.session_members(p.popen.pid)
            if left:
                out["leftovers"] += len(left)
                self.problems.append(f"{p.name}: {len(left)} process(es) of its session alive after "
                                     f"its master exited (killed)")
            hb.kill_session(p.popen.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
            rc = p.popen.returncode
            out["exit"][p.name] = rc
            if rc != 0:
                self.problems.append(f"{p.name} exit code {rc} after SIGTERM")
            hb._POPEN_PIDS.discard(p.popen.pid)
        hb.reap_orphans()
        deadline = time.monotonic() + 5
        while port_in_use(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        if port_in_use(self.port):
            self.problems.append(f"port {self.port} still accepts connections after teardown")
        return out

    def log_lines(self) -> list[str]:
        """WARN/ERROR-level lines from the setup's logs (gunicorn, nginx, curfew)."""
        pat = re.compile(r"\b(WARN|WARNING|ERROR|CRITICAL)\b|\[(warn|error|crit|alert|emerg)\]|WORKER TIMEOUT")
        lines = []
        files = [p.log_path for p in self.procs]
        if self.name == "nginx":
            files.append(self.dir / "nginx" / "error.log")
        for f in files:
            with contextlib.suppress(OSError):
                for line in f.read_text(errors="replace").splitlines():
                    if pat.search(line):
                        lines.append(f"{f.name}: {line.strip()}")
        return lines


def tail(path: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


# --------------------------------------------------------------------------
# attacks (asyncio clients in a thread of their own)
# --------------------------------------------------------------------------

class Attack:
    """Runs one attack against 127.0.0.1:port until stop(). Every client loops
    (reconnecting when the server closes) until it is cancelled."""

    def __init__(self, kind: str, port: int):
        self.kind, self.port = kind, port
        self.stats: Counter = Counter()
        self.statuses: Counter = Counter()
        self.open = 0        # connections open now
        self.placed = 0      # connections with their attack in place (head sent / request sent)
        self.target = {"none": 0, "slowloris": 1000, "slow-upload": 50, "slow-read": 50, "bad-chunk": 3}[kind]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name=f"attack-{kind}", daemon=True)
        self._started = threading.Event()
        # checked by every client loop too: asyncio.wait_for of Python 3.11 can
        # swallow a cancellation that races with its inner future completing
        self.stopping = False

    # -- control (main thread) --
    def start(self) -> None:
        if self.kind == "none":
            return
        self._thread.start()
        self._started.wait(10)

    def wait_in_place(self, timeout: float) -> bool:
        """True once the attack is in place (all connections placed; for the
        bad-chunk flood: answers are coming back)."""
        if self.kind == "none":
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kind == "bad-chunk":
                if self.stats["requests"] >= 3:
                    return True
            elif self.placed >= self.target:
                return True
            time.sleep(0.05)
        return False

    def snapshot(self) -> dict:
        return {"open": self.open, "placed": self.placed, **dict(self.stats),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)}}

    def stop(self) -> None:
        if self.kind == "none" or self._loop is None:
            return
        self.stopping = True
        if self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(20)
        if self._thread.is_alive():
            log(f"warning: attack {self.kind} did not stop within 20 s")

    # -- the event loop (attack thread) --
    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._amain())
        finally:
            self._loop.close()

    async def _amain(self) -> None:
        self._main = asyncio.current_task()
        self._started.set()
        client = {"slowloris": self._slowloris, "slow-upload": self._slow_upload,
                  "slow-read": self._slow_read, "bad-chunk": self._bad_chunk}[self.kind]
        tasks = []
        try:
            # open connections at ~1,000/s so that no accept queue overflows
            for i in range(self.target):
                tasks.append(asyncio.create_task(client(i)))
                if i % 20 == 19:
                    await asyncio.sleep(0.02)
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            pass
        finally:
            pending = set(tasks)
            for _ in range(100):  # bounded: a swallowed cancel is repeated
                if not pending:
                    break
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.1)

    async def _connect(self):
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
        except (OSError, asyncio.TimeoutError):
            self.stats["connect_failed"] += 1
            await asyncio.sleep(0.2)
            return None
        self.stats["connects"] += 1
        return r, w

    async def _answered(self, r: asyncio.StreamReader, wait: float) -> bool:
        """Wait up to `wait` s for the server to answer or close; True if it did
        (recording the status, or the close)."""
        try:
            data = await asyncio.wait_for(r.read(65536), wait)
        except asyncio.TimeoutError:
            return False
        except OSError:
            self.stats["reset_by_server"] += 1
            return True
        if not data:
            self.stats["closed_by_server"] += 1
        else:
            m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
            self.statuses[int(m.group(1)) if m else "?"] += 1
        return True

    async def _trickle(self, i: int, head: bytes, drip: bytes, interval: float) -> None:
        """Send `head`, then one byte of `drip` (cycled) every `interval` s,
        reconnecting whenever the server answers or closes."""
        await asyncio.sleep(random.uniform(0, 0.01))
        while not self.stopping:
            c = await self._connect()
            if c is None:
                continue
            r, w = c
            self.open += 1
            placed = False
            try:
                w.write(head)
                await w.drain()
                self.placed += 1
                placed = True
                k = 0
                await asyncio.sleep(random.uniform(0, interval))  # spread the drips
                while not self.stopping:
                    w.write(drip[k % len(drip):k % len(drip) + 1])
                    await w.drain()
                    k += 1
                    self.stats["bytes_dripped"] += 1
                    if await self._answered(r, interval):
                        break
            except OSError:
                self.stats["reset_by_server"] += 1
            finally:
                self.open -= 1
                if placed:
                    self.placed -= 1
                w.close()
            self.stats["reconnects"] += 1
            await asyncio.sleep(0.1)

    async def _slowloris(self, i: int) -> None:
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
        await self._trickle(i, head, b"X-Slow-Loris: abcdefghijklmnopqrstuvwxyz\r\n", 3.0)

    async def _slow_upload(self, i: int) -> None:
        head = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
        await self._trickle(i, head, b"x", 0.1)

    async def _slow_read(self, i: int) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
            s.setblocking(False)
            placed = False
            try:
                await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", self.port)), 5)
                self.stats["connects"] += 1
                self.open += 1
                try:
                    await loop.sock_sendall(s, b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    self.placed += 1
                    placed = True
                    await asyncio.Event().wait()  # never read; until cancelled
                finally:
                    self.open -= 1
                    if placed:
                        self.placed -= 1
            except (OSError, asyncio.TimeoutError):
                self.stats["connect_failed"] += 1
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(OSError):  # close with unread data: RST
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()

    async def _bad_chunk(self, i: int) -> None:
        req = (b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\nzz\r\nbad chunk size\r\n0\r\n\r\n")
        while not self.stopping:
            c = await self._connect()
            if c is None:
                continue
            r, w = c
            self.open += 1
            try:
                w.write(req)
                await w.drain()
                self.stats["requests"] += 1
                try:
                    line = await asyncio.wait_for(r.readline(), 5)
                    m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
                    if m:
                        self.statuses[int(m.group(1))] += 1
                    else:
                        self.stats["closed_without_answer"] += 1
                except asyncio.TimeoutError:
                    self.stats["no_answer_within_5s"] += 1
            except OSError:
                self.stats["reset_by_server"] += 1
            finally:
                self.open -= 1
                w.close()


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

def _dur_ms(v: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(out: str) -> dict:
    res = {"requests": 0, "duration_s": None, "rps": 0.0, "p50_ms": None, "p75_ms": None,
           "p90_ms": None, "p99_ms": None, "non2xx": 0, "connect": 0, "read": 0, "write": 0,
           "timeout": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    if m:
        res["requests"] = int(m.group(1))
        res["duration_s"] = _dur_ms(m.group(2) + m.group(3)) / 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct in (50, 75, 90, 99):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m and res["requests"] > 0:
            res[f"p{pct}_ms"] = _dur_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["connect"], res["read"], res["write"], res["timeout"] = map(int, m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    res["errors"] = res["non2xx"] + res["connect"] + res["read"] + res["write"] + res["timeout"]
    # wrk leaves requests slower than --timeout out of its latency histogram:
    # when they are over 1% of the total, the real p99 is at least the timeout.
    res["p99_at_least_timeout"] = res["timeout"] > 0.01 * max(res["requests"] + res["timeout"], 1)
    return res


def run_wrk(args, port: int) -> dict:
    secs = max(1, int(round(args.seconds)))
    argv = [args.wrk, "-t1", f"-c{WRK_CONNECTIONS}", f"-d{secs}s", "--latency",
            "--timeout", f"{WRK_TIMEOUT_S}s", f"http://127.0.0.1:{port}/"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 60)
    res = parse_wrk(p.stdout)
    res["wrk_rc"] = p.returncode
    res["wrk_output"] = p.stdout + p.stderr
    return res


# --------------------------------------------------------------------------
# one cell, the table
# --------------------------------------------------------------------------

@dataclass
class Cell:
    attack: str
    setup: str
    wrk: dict | None = None
    attack_before: dict = field(default_factory=dict)
    attack_after: dict = field(default_factory=dict)
    in_place: bool = True
    start_s: float | None = None
    teardown: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    canary_after: int | None = None


def run_cell(args, tmp: Path, attack: str, setup_name: str, rnd: int = 0) -> Cell:
    cell = Cell(attack, setup_name)
    setup = Setup(setup_name, args, tmp, f"{attack}-{setup_name}" + (f"-{rnd + 1}" if rnd else ""))
    att = None
    try:
        cell.start_s = round(setup.start(), 2)
        time.sleep(0.5)
        att = Attack(attack, setup.port)
        att.start()
        cell.in_place = att.wait_in_place(args.ramp_timeout)
        if not cell.in_place:
            cell.problems.append(f"attack not fully in place after {args.ramp_timeout:g} s: "
                                 f"{att.placed} of {att.target} placed")
        if attack != "none":
            time.sleep(args.settle)
        cell.attack_before = att.snapshot()
        cell.wrk = run_wrk(args, setup.port)
        cell.attack_after = att.snapshot()
        cell.problems += setup.alive()
    except Exception as e:  # a setup that fails to start: the cell stays empty
        cell.problems.append(f"error: {e}")
    finally:
        if att is not None:
            att.stop()
        # still serving once the attack is gone?
        if not setup.alive():
            with contextlib.suppress(Exception):
                cell.canary_after = get_status(setup.port, "/", timeout=5)
                if cell.canary_after != 200:
                    cell.problems.append(f"GET / after the attack stopped: {cell.canary_after}")
        cell.teardown = setup.stop()
        cell.problems += setup.problems
        cell.log_lines = setup.log_lines()
    return cell


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_p99(w: dict) -> str:
    if w["requests"] == 0:
        return "none answered"
    if w["p99_at_least_timeout"]:
        return f"≥ {WRK_TIMEOUT_S * 1000}"
    return fmt_ms(w["p99_ms"])


def eff_p99(w: dict) -> float | None:
    if w["requests"] == 0:
        return float("inf")
    if w["p99_at_least_timeout"]:
        return float(WRK_TIMEOUT_S * 1000)
    return w["p99_ms"]


def fmt_errors(w: dict) -> str:
    if w["requests"] == 0 and w["errors"] == 0:
        return f"no response on any of the {WRK_CONNECTIONS} connections"
    if w["errors"] == 0:
        return "0"
    parts = [f"{k} {w[k]}" for k in ("non2xx", "connect", "read", "write", "timeout") if w[k]]
    return f"{w['errors']} ({', '.join(parts)})"


def verdict(c: Cell | None, n: Cell | None) -> tuple[str, str, str]:
    """(req/s ratio, p99 ratio, goal) of curfew against nginx + gunicorn."""
    if not (c and n and c.wrk and n.wrk):
        return "—", "—", "—"
    cr, nr = c.wrk["rps"], n.wrk["rps"]
    cp, np_ = eff_p99(c.wrk), eff_p99(n.wrk)
    rr = f"{cr / nr:.2f}×" if nr > 0 else ("—" if cr == 0 else "∞")
    pr = "—"
    if cp is not None and np_ and np_ != float("inf"):
        pr = f"{cp / np_:.2f}×" if cp != float("inf") else "∞"
    ok = (cr >= nr and (cp is not None and (np_ is None or cp <= np_))
          and c.wrk["errors"] <= n.wrk["errors"])
    return rr, pr, "PASS" if ok else "FAIL"


def median_cell(runs: list[Cell]) -> Cell:
    """One cell standing for several rounds of the same attack x setup: the
    median req/s, p50 and p99 (each on its own), errors summed, every
    round's problems and log lines kept."""
    done = [c for c in runs if c.wrk]
    first = runs[0]
    if not done:
        return first
    if len(done) == 1 and len(runs) == 1:
        return first

    def med(key: str):
        vals = [c.wrk[key] for c in done if c.wrk[key] is not None]
        return statistics.median(vals) if vals else None

    w = dict(done[0].wrk)
    w["rps"] = med("rps")
    w["requests"] = int(med("requests") or 0)
    for k in ("p50_ms", "p75_ms", "p90_ms", "p99_ms"):
        w[k] = med(k)
    for k in ("non2xx", "connect", "read", "write", "timeout", "errors"):
        w[k] = sum(c.wrk[k] for c in done)
    w["p99_at_least_timeout"] = sum(c.wrk["p99_at_least_timeout"] for c in done) * 2 > len(done)
    out = Cell(first.attack, first.setup, wrk=w, attack_before=first.attack_before,
               attack_after=first.attack_after, in_place=all(c.in_place for c in runs),
               start_s=first.start_s, teardown=first.teardown)
    for i, c in enumerate(runs, 1):
        tag = f"round {i}: " if len(runs) > 1 else ""
        out.problems += [tag + p for p in c.problems]
        out.log_lines += c.log_lines
    return out


def round_ratios(runs: dict, attack: str, setup: str) -> str:
    """curfew ÷ nginx req/s of each round (the same round's two cells)."""
    cs, ns = runs.get((attack, setup), []), runs.get((attack, "nginx"), [])
    out = []
    for c, n in zip(cs, ns):
        if c.wrk and n.wrk and n.wrk["rps"] > 0:
            out.append(f"{c.wrk['rps'] / n.wrk['rps']:.2f}")
        else:
            out.append("—")
    return " / ".join(out)


def build_table(cells: dict, attacks: list[str], setups: list[str], runs: dict | None = None) -> str:
    """`cells`: one (median) cell per attack x setup; `runs`: every round's
    cells, for a column of the per-round ratios (more than one round)."""
    head = ("| attack | setup | req/s | p50 ms | p99 ms | errors (wrk) | "
            "curfew ÷ nginx req/s | curfew ÷ nginx p99 | goal |")
    sep = "|---|---|---:|---:|---:|---|---:|---:|---|"
    if runs:
        head += " curfew ÷ nginx req/s, each round |"
        sep += "---|"
    rows = [head, sep]
    for a in attacks:
        for s in setups:
            c = cells.get((a, s))
            w = c.wrk if c else None
            if w is None:
                rows.append(f"| {a} | {LABEL[s]} | — | — | — | failed: see notes | | | |" + (" |" if runs else ""))
                continue
            rr = pr = goal = ""
            if s in CURFEW_SETUPS:
                rr, pr, goal = verdict(c, cells.get((a, "nginx")))
            p50 = fmt_ms(w["p50_ms"]) if w["requests"] else "—"
            row = (f"| {a} | {LABEL[s]} | {w['rps']:,.0f} | {p50} | {fmt_p99(w)} "
                   f"| {fmt_errors(w)} | {rr} | {pr} | {goal} |")
            if runs:
                row += f" {round_ratios(runs, a, s) if s in CURFEW_SETUPS else ''} |"
            rows.append(row)
    return "\n".join(rows)


def notes(cells: dict) -> list[str]:
    out = []
    for (a, s), c in cells.items():
        who = f"{a} / {LABEL[s]}"
        for p in c.problems:
            out.append(f"- {who}: {p}")
        if a != "none" and c.attack_after:
            st = c.attack_after
            target = {"slowloris": 1000, "slow-upload": 50, "slow-read": 50}.get(a)
            bits = []
            if target:
                bits.append(f"in place {c.attack_before.get('placed', '?')} of {target} when wrk started, "
                            f"{st.get('placed')} when it ended")
            for k in ("requests", "reconnects", "closed_by_server", "reset_by_server", "connect_failed",
                      "closed_without_answer", "no_answer_within_5s"):
                if st.get(k):
                    bits.append(f"{k.replace('_', ' ')} {st[k]}")
            if st.get("statuses"):
                bits.append("statuses " + ", ".join(f"{k}: {v}" for k, v in st["statuses"].items()))
            out.append(f"- {who}: attackers: {'; '.join(bits)}")
        if c.log_lines:
            out.append(f"- {who}: {len(c.log_lines)} WARN/ERROR log line(s), first: "
                       f"`{c.log_lines[0][:240]}`")
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def check_tools(args) -> None:
    missing = []
    for tool in ("nginx", "wrk"):
        path = getattr(args, tool)
        if not (shutil.which(path) or Path(path).exists()):
            missing.append(tool)
    if missing:
        sys.exit(f"missing: {', '.join(missing)}; install with: apt-get install -y {' '.join(missing)} "
                 f"(or pass --nginx / --wrk PATH)")
    args.nginx = shutil.which(args.nginx) or args.nginx
    args.wrk = shutil.which(args.wrk) or args.wrk
    if not Path(args.curfew).is_file():
        sys.exit(f"no curfew binary at {args.curfew}: cargo build --release (or pass --curfew PATH)")
    if not (args.venv / "bin" / "gunicorn").exists():
        sys.exit(f"no gunicorn in {args.venv}: bash scripts/python-env.sh (or pass --venv DIR)")
    chk = subprocess.run([str(args.venv / "bin" / "python"), "-c", "import flask"], capture_output=True)
    if chk.returncode != 0:
        sys.exit(f"flask is not installed in {args.venv}: {args.venv}/bin/pip install flask")


def nginx_user_line() -> str:
    """nginx's `user` directive when run as root (else its workers would run
    as nobody and could not reach the temp dir's sockets)."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd
    return f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"


def tool_versions(args) -> dict:
    """nginx, wrk and curfew (with the tree and build time) as `versions` report them."""
    v = {}
    with contextlib.suppress(OSError):
        ng = subprocess.run([args.nginx, "-v"], capture_output=True, text=True)
        v["nginx"] = (ng.stderr or ng.stdout).strip().split("/")[-1]
    with contextlib.suppress(OSError):
        w = subprocess.run([args.wrk, "-v"], capture_output=True, text=True)
        words = (w.stdout + w.stderr).split()
        v["wrk"] = words[1] if len(words) > 1 else "?"
    cv = ""
    with contextlib.suppress(OSError):
        cv = subprocess.run([str(args.curfew), "--version"], capture_output=True, text=True).stdout.strip()
    v["curfew"] = cv or "?"
    rev = hb.sh(["git", "rev-parse", "--short", "HEAD"]) or "?"
    with contextlib.suppress(OSError):
        built = _dt.datetime.fromtimestamp(Path(args.curfew).stat().st_mtime, _dt.timezone.utc)
        v["curfew"] += f" ({args.curfew}, tree {rev}, binary built {built:%Y-%m-%d %H:%M UTC})"
    return v


def versions(args) -> dict:
    v = {}
    code = ("import importlib.metadata as m\n"
            "for n in ('gunicorn', 'flask'):\n"
            "    print(n, m.version(n))\n")
    out = hb.sh([str(args.venv / "bin" / "python"), "-c", code])
    v.update(dict(line.split(" ", 1) for line in out.splitlines() if " " in line))
    v.update(tool_versions(args))
    return v


def render_section(table: str, note_lines: list[str], args, cmdline: str, vers: dict, load: str) -> str:
    mach = hb.machine_info()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        SECTION_BEGIN,
        "## Under attack: curfew alone vs gunicorn alone vs nginx + gunicorn",
        "",
        f"- date: {now}",
        f"- machine: {mach['nproc']} CPUs ({mach['model']}), {mach['mem']} RAM, kernel {mach['kernel']}; "
        f"load average at the start: {load}",
        f"- command: `{cmdline}`",
        f"- versions: {vers.get('curfew')}; gunicorn {vers.get('gunicorn')}, flask {vers.get('flask')}, "
        f"nginx {vers.get('nginx')}, wrk {vers.get('wrk')}",
        f"- app: bench/attack_app.py, 2 sync gunicorn workers in every setup; normal traffic: "
        f"`wrk -t1 -c{WRK_CONNECTIONS} -d{max(1, int(round(args.seconds)))}s --latency "
        f"--timeout {WRK_TIMEOUT_S}s http://127.0.0.1:P/` while the attack runs",
        "- attacks: " + "; ".join(f"{a}: {ATTACK_DESC[a]}" for a in ATTACKS if a != "none"),
        "- goal: curfew alone ≥ nginx + gunicorn on every row (req/s ≥, p99 ≤, wrk errors ≤); "
        f"\"≥ {WRK_TIMEOUT_S * 1000}\" p99: over 1% of the requests timed out ({WRK_TIMEOUT_S} s), which "
        "wrk leaves out of its percentiles",
        f"- rounds: {args.rounds}" + (
            " (setups in a rotated order each round); req/s, p50 and p99 are each the median of the "
            "rounds, errors their sum, the goal is judged on the medians; the last column is every "
            "round's own curfew ÷ nginx req/s" if args.rounds > 1 else ""),
        "",
        table,
    ]
    if note_lines:
        parts += ["", "Notes:", ""] + note_lines
    parts += ["", SECTION_END, ""]
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curfew", default=str(REPO / "target" / "release" / "curfew"),
                    help="curfew binary (default: target/release/curfew)")
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("CURFEW_VENV") or REPO / ".venv"),
                    help="venv with gunicorn and flask (default: .venv)")
    ap.add_argument("--nginx", default="nginx", help="nginx binary (default: nginx on PATH or /usr/sbin)")
    ap.add_argument("--nginx-mime-types", default="/etc/nginx/mime.types")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--seconds", type=float, default=10.0, help="wrk duration per cell (default 10)")
    ap.add_argument("--only", default="",
                    help="comma-separated setups (gunicorn, nginx, curfew) and/or attacks "
                         f"({', '.join(ATTACKS)}) to run; default: all")
    ap.add_argument("--ramp-timeout", type=float, default=20.0,
                    help="longest wait for an attack to be in place before measuring (default 20 s)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="wait after the attack is in place, before wrk starts (default 1 s)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every attack x setup N times (setups in a rotated order each round) "
                         "and report the medians, with each round's curfew ÷ nginx ratio (default 1)")
    ap.add_argument("--json", metavar="PATH", help="write the raw numbers (every cell) to PATH")
    ap.add_argument("--write", action="store_true",
                    help="record the table in bench/RESULTS.md (section attack_bench)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, nginx config)")
    args = ap.parse_args()
    args.curfew = str(Path(args.curfew).resolve())
    args.venv = args.venv.resolve()
    sbin = "/usr/sbin:/sbin"
    os.environ["PATH"] = os.environ.get("PATH", "") + ":" + sbin

    only = [x.strip() for x in args.only.split(",") if x.strip()]
    bad = [x for x in only if x not in SETUPS + ATTACKS]
    if bad:
        sys.exit(f"--only: unknown {', '.join(bad)} (setups: {', '.join(SETUPS)}; attacks: {', '.join(ATTACKS)})")
    setups = [s for s in SETUPS if s in only] or SETUPS
    attacks = [a for a in ATTACKS if a in only] or ATTACKS

    check_tools(args)
    nofile = raise_nofile()
    if nofile < 4096:
        log(f"warning: RLIMIT_NOFILE hard limit is {nofile}: 1,000 slowloris connections need more")
    hb.become_subreaper()
    signal.signal(signal.SIGINT, hb._on_signal)
    signal.signal(signal.SIGTERM, hb._on_signal)

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cmdline = "python3 bench/attack_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    vers = versions(args)
    tmp = Path(tempfile.mkdtemp(prefix="curfew-attack-bench-"))
    log(f"curfew {vers['curfew']}; logs in {tmp}; load average {load}")

    if args.rounds < 1:
        sys.exit("--rounds: must be at least 1")
    runs: dict[tuple[str, str], list[Cell]] = {}
    try:
        for a, rnd in ((a, r) for a in attacks for r in range(args.rounds)):
            # A rotated order each round: no setup always runs first (on
            # a cold machine) or right after the same neighbour.
            order = setups[rnd % len(setups):] + setups[:rnd % len(setups)]
            for s in order:
                of = f" (round {rnd + 1} of {args.rounds})" if args.rounds > 1 else ""
                log(f"{a} / {LABEL[s]}{of} ...")
                c = run_cell(args, tmp, a, s, rnd)
                runs.setdefault((a, s), []).append(c)
                if c.wrk:
                    w = c.wrk
                    log(f"  {w['rps']:,.0f} req/s, p50 {fmt_ms(w['p50_ms'])} ms, p99 {fmt_p99(w)}, "
                        f"errors {fmt_errors(w)}; attackers {c.attack_before.get('placed', 0)} placed"
                        + (f"; problems: {c.problems}" if c.problems else ""))
                else:
                    log(f"  failed: {c.problems}")
    finally:
        hb.kill_all_sessions()

    cells = {k: median_cell(v) for k, v in runs.items()}
    table = build_table(cells, attacks, setups, runs if args.rounds > 1 else None)
    note_lines = notes(cells)
    print()
    print(table)
    if note_lines:
        print("\nNotes:\n")
        print("\n".join(note_lines))

    if args.json:
        raw = {"command": cmdline, "versions": vers, "load_average_at_start": load,
               "seconds": args.seconds, "wrk_connections": WRK_CONNECTIONS, "wrk_timeout_s": WRK_TIMEOUT_S,
               "cells": [{"attack": c.attack, "setup": c.setup, "wrk": c.wrk, "attack_before": c.attack_before,
                          "attack_after": c.attack_after, "attack_in_place": c.in_place,
                          "start_s": c.start_s, "teardown": c.teardown, "problems": c.problems,
                          "log_lines": c.log_lines[:50], "canary_after": c.canary_after}
                         for cs in runs.values() for c in cs]}
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.write:
        hb.write_results(render_section(table, note_lines, args, cmdline, vers, load), SECTION_BEGIN, SECTION_END)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
