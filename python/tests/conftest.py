"""Fixtures: a real curfew (the binary from $CURFEW_BIN, else the one
installed with the package, else target/debug/curfew) serving the test apps
in apps/, with its job store on SQLite or PostgreSQL.

PostgreSQL: $CURFEW_TEST_PG_URL (default postgres://postgres@127.0.0.1:5432/test);
each curfew gets a schema of its own. Tests that need it are skipped when it
is unreachable, unless $CURFEW_TEST_REQUIRE_PG=1 (as in .ci/run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
APPS = HERE / "apps"
SOURCE = REPO / "python"

# The SDK under test: the installed package if there is one (the wheel), else
# the source tree.
if importlib.util.find_spec("curfew") is None:
    sys.path.insert(0, str(SOURCE))
import curfew  # noqa: E402

# The test apps' modules (apps/handlers.py) for the tests that import them.
sys.path.insert(0, str(APPS))

PG_URL = os.environ.get("CURFEW_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/test")


def curfew_binary() -> str:
    """$CURFEW_BIN; else the binary installed with the curfew package under
    test (the wheel); else cargo's build in this checkout."""
    if os.environ.get("CURFEW_BIN"):
        return os.environ["CURFEW_BIN"]
    if _installed():
        return curfew.find_binary()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("debug", "release"):
        if (target / profile / "curfew").exists():
            return str(target / profile / "curfew")
    pytest.exit("no curfew binary: set CURFEW_BIN, pip install the wheel, or cargo build", 2)


def pg_available() -> bool:
    if shutil.which("pg_isready") is None:
        return False
    host = PG_URL.split("@", 1)[-1].split("/", 1)[0]
    h, _, p = host.partition(":")
    return subprocess.run(["pg_isready", "-q", "-h", h, "-p", p or "5432"]).returncode == 0


def require_pg() -> None:
    if not pg_available():
        if os.environ.get("CURFEW_TEST_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_str(s: str) -> str:
    return json.dumps(s)


class Curfew:
    """One curfew process serving an app from apps/."""

    def __init__(
        self,
        tmp: Path,
        command: List[str],
        store: str = "sqlite",
        admin: str = "tcp",
        extra_env: Optional[Dict[str, str]] = None,
        token: Optional[str] = None,
    ) -> None:
        self.tmp = tmp
        self.records = tmp / "records"
        self.records.mkdir()
        self.port = free_port()
        self.control = tmp / "control.sock"
        if admin == "tcp":
            self.admin_port = free_port()
            admin_bind = f"127.0.0.1:{self.admin_port}"
            self.admin_url = f"http://{admin_bind}"
        elif admin == "exposed":
            # Reachable from other hosts: without admin_token, the job API
            # refuses every caller there (403).
            self.admin_port = free_port()
            admin_bind = f"0.0.0.0:{self.admin_port}"
            self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        else:
            admin_bind = f"unix:{tmp / 'admin.sock'}"
            self.admin_url = admin_bind
        self.schema = None
        if store == "sqlite":
            store_url = f"sqlite://{tmp / 'jobs.db'}"
            store_extra = ""
        else:
            store_url = PG_URL
            self.schema = "t_" + uuid.uuid4().hex[:12]
            store_extra = f"pg_schema = {toml_str(self.schema)}\n"
        self.config = tmp / "curfew.toml"
        self.config.write_text(
            f"command = {json.dumps(command)}\n"
            f"chdir = {toml_str(str(APPS))}\n"
            f"bind = {toml_str(f'127.0.0.1:{self.port}')}\n"
            f"admin_bind = {toml_str(admin_bind)}\n"
            f"control_socket = {toml_str(str(self.control))}\n"
            + (f"admin_token = {toml_str(token)}\n" if token else "")
            + "workers = 2\n"
            'ready_path = "/health"\n'
            'graceful_timeout = "5s"\n'
            'worker_stop_timeout = "2s"\n'
            "[jobs]\n"
            f"store = {toml_str(store_url)}\n"
            f"{store_extra}"
            'poll_interval = "500ms"\n'
            'max_payload = "64KiB"\n'
            "[jobs.queues.default]\n"
            "concurrency = 4\n"
            'retry_backoff = "1s"\n'
            "[jobs.queues.mail]\n"
            "concurrency = 2\n"
        )
        env = dict(os.environ)
        for name in (
            "CURFEW_ADMIN_URL",
            "CURFEW_ADMIN_TOKEN",
            "CURFEW_CONTROL_SOCKET",
            "CURFEW_BIN",
            "CURFEW_TEST_REQUIRE_PG",
        ):
            env.pop(name, None)
        env["TEST_RECORD_DIR"] = str(self.records)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(APPS)] + ([] if _installed() else [str(SOURCE)])
        )
        # The workers run the Python of this test run (its venv's packages).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(extra_env or {})
        self.log_path = tmp / "curfew.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [curfew_binary(), "serve", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
        self.client = (
            curfew.Client(f"control:{self.control}")
            if admin == "exposed" and not token
            else curfew.Client(self.admin_url, token=token)
        )
        self.wait_ready()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"curfew exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"curfew not ready in {timeout} s:\n{self.log_text()}")

    def wait_job(self, job_id: int, done: Callable[[Dict[str, Any]], bool], timeout: float = 20) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        job = self.client.job(job_id)
        while not done(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job}\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
            job = self.client.job(job_id)
        return job

    def runs(self, kind: str) -> List[Dict[str, Any]]:
        try:
            lines = (self.records / f"{kind}.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self.log.close()
        if self.schema:
            subprocess.run(
                ["psql", PG_URL, "-q", "-c", f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"],
                capture_output=True,
            )
        return self.proc.returncode


def _installed() -> bool:
    return not str(Path(curfew.__file__).resolve()).startswith(str(SOURCE))


APP_COMMANDS = {
    "fastapi": [sys.executable, "-m", "uvicorn", "fastapi_jobs:app", "--fd", "3", "--no-access-log"],
    "flask": [sys.executable, "-m", "gunicorn", "--workers", "1", "--no-control-socket", "flask_jobs:app"],
    "django": [sys.executable, "-m", "gunicorn", "--workers", "1", "--no-control-socket", "djsite.wsgi"],
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fastapi_curfew(request, tmp_path_factory):
    """FastAPI under uvicorn, on each store."""
    if request.param == "postgres":
        require_pg()
    c = Curfew(tmp_path_factory.mktemp(f"fastapi-{request.param}"), APP_COMMANDS["fastapi"], store=request.param)
    yield c
    c.stop()


@pytest.fixture(scope="module", params=["fastapi", "flask", "django"])
def app_curfew(request, tmp_path_factory):
    """Each framework adapter (SQLite store; the admin address on a Unix
    socket for Flask, to cover that transport)."""
    admin = "unix" if request.param == "flask" else "tcp"
    extra = {"DJANGO_SETTINGS_MODULE": "djsite.settings"} if request.param == "django" else {}
    c = Curfew(
        tmp_path_factory.mktemp(request.param),
        APP_COMMANDS[request.param],
        admin=admin,
        extra_env=extra,
    )
    yield c
    c.stop()
