"""Enqueueing jobs: a small HTTP client for curfew's job API (``POST /jobs``
on the admin address), with the control socket as a fallback.

Where curfew is: ``CURFEW_ADMIN_URL`` (``http://127.0.0.1:9000`` or
``unix:/path/admin.sock``), which curfew sets for its workers when
``admin_bind`` is configured; else ``CURFEW_CONTROL_SOCKET``, which curfew
always sets for its workers (the same jobs requests, one connection each).
Outside curfew (a script, a cron job, a test), set one of them or pass
``url=``.

One keep-alive connection per thread (and per process, so a fork after the
first enqueue does not share a socket) is reused for every request.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import math
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from ._errors import NotConfigured, RequestError, ServerError, Unreachable

JSON = Any
RunAt = Union[_dt.datetime, str]
Delay = Union[int, float, _dt.timedelta]
UniqueScope = Union[str, _dt.timedelta]

#: Seconds to wait for curfew's answer (connect, send, answer).
DEFAULT_TIMEOUT = 10.0

#: How curfew's control socket starts its answer when curfew stops before
#: answering (src/control.rs), or stopped in the middle of an enqueue
#: (``EnqueueError::ShuttingDown``): the HTTP API's 503.
_SHUTTING_DOWN = "curfew is shutting down"

#: The longest ``delay`` curfew takes, in seconds (src/processor/api.rs).
MAX_DELAY_S = 1e10


@dataclass(frozen=True)
class Job:
    """An enqueued job: its ``id``, whether this call ``created`` it
    (``False``: a job with the same idempotency key existed and this is that
    one; ``None``: not known, e.g. a transactional enqueue) and its
    ``queue``."""

    id: int
    created: Optional[bool]
    queue: str


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def job_request(
    kind: str,
    payload: JSON = None,
    *,
    queue: Optional[str] = None,
    run_at: Optional[RunAt] = None,
    delay: Optional[Delay] = None,
    priority: Optional[int] = None,
    max_attempts: Optional[int] = None,
    idempotency_key: Optional[str] = None,
    unique_key: Optional[str] = None,
    unique_scope: Optional[UniqueScope] = None,
) -> Dict[str, Any]:
    """The ``POST /jobs`` body for these arguments (checked here, so a
    mistake fails before anything is sent)."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, not {kind!r}")
    body: Dict[str, Any] = {"kind": kind}
    if queue is not None:
        body["queue"] = queue
    if payload is not None:
        body["payload"] = payload
    if run_at is not None and delay is not None:
        raise ValueError("give either run_at or delay, not both")
    if run_at is not None:
        if isinstance(run_at, _dt.datetime):
            # A naive datetime is local time, as everywhere in Python.
            body["run_at"] = run_at.astimezone().isoformat()
        elif isinstance(run_at, str):
            body["run_at"] = run_at
        else:
            raise TypeError(f"run_at must be a datetime or an RFC 3339 string, not {run_at!r}")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, _dt.timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"delay must be 0 or more seconds (or a timedelta), not {delay!r}")
        # inf would be sent as ``Infinity``, which is not JSON; curfew takes
        # at most MAX_DELAY_S.
        if not math.isfinite(seconds) or seconds > MAX_DELAY_S:
            raise ValueError(
                f"delay must be a finite number of seconds, at most {MAX_DELAY_S:g} (curfew's limit), "
                f"not {delay!r}"
            )
        body["delay_s"] = float(seconds)
    if priority is not None:
        body["priority"] = int(priority)
    if max_attempts is not None:
        body["max_attempts"] = int(max_attempts)
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise ValueError("idempotency_key must be a non-empty string")
        body["idempotency_key"] = idempotency_key
    if unique_key is not None:
        if not isinstance(unique_key, str) or not unique_key or len(unique_key) > 200:
            raise ValueError(f"unique_key must be a string of 1 to 200 characters, not {unique_key!r}")
        body["unique_key"] = unique_key
    if unique_scope is not None:
        if unique_key is None:
            raise ValueError("unique_scope needs a unique_key")
        body["unique_scope"] = _unique_scope(unique_scope)
    return body


def _unique_scope(scope: UniqueScope) -> str:
    """``"queued"``, ``"queued+running"``, or a window: a duration string
    (``"10m"``) or a ``timedelta``, sent as milliseconds."""
    if isinstance(scope, _dt.timedelta):
        ms = int(scope.total_seconds() * 1000)
        if ms < 1:
            raise ValueError(f"unique_scope: a window must be at least 1 ms, not {scope!r}")
        return f"{ms}ms"
    if isinstance(scope, str) and scope:
        return scope
    raise ValueError(
        f"unique_scope must be 'queued', 'queued+running' or a window ('10m' or a timedelta), not {scope!r}"
    )


class Client:
    """A connection to one curfew's job API.

    ``url``: ``http://host:port``, ``unix:/path`` (HTTP over a Unix socket)
    or ``control:/path`` (curfew's control socket); default from
    ``CURFEW_ADMIN_URL``, else ``control:$CURFEW_CONTROL_SOCKET``, read at
    the first request. ``token``: curfew's ``admin_token``, default
    ``CURFEW_ADMIN_TOKEN`` (set by curfew for its workers). Safe to share
    between threads.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        token: Optional[str] = None,
    ) -> None:
        self._url = url
        self.timeout = timeout
        # curfew's admin_token (sent as a bearer token); default from
        # CURFEW_ADMIN_TOKEN, which curfew sets for its workers.
        self._token = token
        self._local = threading.local()

    # -- where curfew is -------------------------------------------------

    @property
    def url(self) -> str:
        """The address in use (resolved from the environment if not given)."""
        if self._url is None:
            admin = os.environ.get("CURFEW_ADMIN_URL")
            control = os.environ.get("CURFEW_CONTROL_SOCKET")
            if admin:
                self._url = admin
            elif control:
                self._url = "control:" + control
            else:
                raise NotConfigured(
                    "cannot find curfew: CURFEW_ADMIN_URL and CURFEW_CONTROL_SOCKET are not set. "
                    "curfew sets them for its workers; elsewhere set CURFEW_ADMIN_URL "
                    "(e.g. http://127.0.0.1:9000, curfew's admin_bind) or pass "
                    "curfew.Client(url=...)"
                )
        return self._url

    def _target(self) -> Tuple[str, str, str]:
        """(scheme, where, base path) of the address."""
        url = self.url
        if url.startswith("unix:") or url.startswith("control:"):
            scheme, _, path = url.partition(":")
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise NotConfigured(f"no socket path in {url!r}")
            return scheme, path, ""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.netloc:
            raise NotConfigured(
                f"unsupported curfew address {url!r}: give http://host:port, unix:/path or control:/path"
            )
        return "http", parts.netloc, parts.path.rstrip("/")

    # -- the connection ----------------------------------------------------

    def _connection(self) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it was used before."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and getattr(local, "pid", None) == os.getpid():
            return conn, True
        scheme, where, _ = self._target()
        if scheme == "unix":
            conn = _UnixHTTPConnection(where, self.timeout)
        else:
            conn = http.client.HTTPConnection(where, timeout=self.timeout)
        local.conn = conn
        local.pid = os.getpid()
        return conn, False

    def close(self) -> None:
        """Closes this thread's connection (a later request opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _http(
        self, method: str, path: str, body: Optional[bytes] = None
    ) -> Tuple[int, Dict[str, str], JSON]:
        _, _, base = self._target()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self._token if self._token is not None else os.environ.get("CURFEW_ADMIN_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request(method, base + path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self.close()
                # A kept-alive connection curfew had closed while idle: the
                # request never reached it, send it on a new connection.
                if reused and attempt == 1:
                    continue
                raise Unreachable(f"curfew at {self.url} closed the connection: {e}") from e
            except socket.timeout as e:
                self.close()
                raise Unreachable(
                    f"curfew at {self.url} did not answer within {self.timeout:g} s; the job may "
                    "have been stored (give an idempotency_key to send it again safely)"
                ) from e
            except OSError as e:
                self.close()
                raise Unreachable(f"cannot reach curfew at {self.url}: {e}") from e
            if response.will_close:
                self.close()
            try:
                data = json.loads(raw) if raw.strip() else None
            except ValueError:
                data = raw.decode("utf-8", "replace").strip()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def _control(self, request: Dict[str, Any]) -> JSON:
        _, path, _ = self._target()
        line = json.dumps({"cmd": "jobs", "request": request}).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(path)
                s.sendall(line)
                chunks = []
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    if chunk.endswith(b"\n"):
                        break
        except socket.timeout as e:
            raise Unreachable(
                f"curfew's control socket {path} did not answer within {self.timeout:g} s; the job "
                "may have been stored (give an idempotency_key to send it again safely)"
            ) from e
        except OSError as e:
            raise Unreachable(f"cannot reach curfew's control socket {path}: {e}") from e
        try:
            answer = json.loads(b"".join(chunks))
        except ValueError as e:
            raise Unreachable(f"curfew's control socket {path} gave no answer") from e
        if not isinstance(answer, dict):
            raise Unreachable(f"curfew's control socket {path} gave no answer")
        if not answer.get("ok"):
            self._raise_for_control(answer)
        return answer.get("data")

    @staticmethod
    def _raise_for_control(answer: Mapping[str, Any]) -> None:
        """A failed control-socket answer as the same exception as its HTTP
        equivalent: curfew gives a jobs request's status in ``http_status``
        (and ``retry_after``, the ``Retry-After`` seconds). Without it (an
        older curfew, or a refusal before the request reached the job API):
        ``RequestError(None, ...)``, except curfew stopping, which is a 503."""
        message = str(answer.get("error") or answer)
        status = answer.get("http_status")
        if isinstance(status, bool) or not isinstance(status, int):
            status = None
        if status is None and message.startswith(_SHUTTING_DOWN):
            status = 503
        if status is None:
            raise RequestError(None, message)
        retry_after = answer.get("retry_after")
        headers = {} if retry_after is None else {"retry-after": str(retry_after)}
        Client._raise_for(status, headers, {"error": message})
        # An http_status under 400 in a failed answer: still a failure.
        raise RequestError(status, message)

    @staticmethod
    def _raise_for(status: int, headers: Mapping[str, str], data: JSON) -> None:
        if status < 400:
            return
        message = data.get("error") if isinstance(data, dict) else data
        message = str(message or f"HTTP {status}")
        if status < 500:
            raise RequestError(status, message)
        retry_after: Optional[float] = None
        try:
            retry_after = float(headers.get("retry-after", ""))
        except ValueError:
            pass
        raise ServerError(status, message, retry_after)

    # -- the API -----------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: JSON = None,
        *,
        queue: Optional[str] = None,
        run_at: Optional[RunAt] = None,
        delay: Optional[Delay] = None,
        priority: Optional[int] = None,
        max_attempts: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        unique_key: Optional[str] = None,
        unique_scope: Optional[UniqueScope] = None,
    ) -> Job:
        """Stores a job; see :func:`curfew.enqueue`."""
        body = job_request(
            kind,
            payload,
            queue=queue,
            run_at=run_at,
            delay=delay,
            priority=priority,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            unique_key=unique_key,
            unique_scope=unique_scope,
        )
        return self._submit(body)

    def _submit(self, body: Dict[str, Any]) -> Job:
        if self._target()[0] == "control":
            data = self._control({"op": "enqueue", "job": body})
        else:
            status, headers, data = self._http("POST", "/jobs", json.dumps(body).encode())
            self._raise_for(status, headers, data)
        if not isinstance(data, dict) or "id" not in data:
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return Job(id=int(data["id"]), created=bool(data.get("created", True)), queue=str(data.get("queue", "")))

    #: Jobs per request of :meth:`enqueue_many` (curfew's limit per batch).
    MAX_BATCH = 10_000

    def enqueue_many(self, jobs: Iterable[Union[Mapping[str, Any], Tuple[str, JSON]]]) -> List[Job]:
        """Stores several jobs in one request (``POST /jobs`` with a JSON
        array, or one control-socket request): one transaction, all or
        nothing, per 10,000 jobs. Each item is a mapping of :meth:`enqueue`'s
        arguments (``{"kind": ..., "payload": ..., "queue": ...}``) or a
        ``(kind, payload)`` pair. Every job is checked before anything is
        sent; curfew's error names each bad job by its index in the batch.
        With more than 10,000 jobs, if a batch fails, the exception's
        ``enqueued`` attribute lists the jobs of the batches stored before
        it; give idempotency keys to send the whole list again safely."""
        bodies = []
        for item in jobs:
            if isinstance(item, tuple):
                kind, payload = item
                bodies.append(job_request(kind, payload))
            else:
                bodies.append(job_request(**item))
        done: List[Job] = []
        for start in range(0, len(bodies), self.MAX_BATCH):
            batch = bodies[start : start + self.MAX_BATCH]
            try:
                done.extend(self._submit_many(batch))
            except Exception as e:
                e.enqueued = list(done)  # type: ignore[attr-defined]
                raise
        return done

    def _submit_many(self, bodies: List[Dict[str, Any]]) -> List[Job]:
        if self._target()[0] == "control":
            data = self._control({"op": "enqueue_many", "jobs": bodies})
        else:
            status, headers, data = self._http("POST", "/jobs", json.dumps(bodies).encode())
            self._raise_for(status, headers, data)
        answers = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(answers, list) or len(answers) != len(bodies):
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return [
            Job(id=int(a["id"]), created=bool(a.get("created", True)), queue=str(a.get("queue", "")))
            for a in answers
        ]

    def job(self, id: int) -> Dict[str, Any]:
        """One job as curfew stores it (``state``, ``attempt``,
        ``last_error``, ...)."""
        if self._target()[0] == "control":
            data = self._control({"op": "show", "id": int(id)})
        else:
            status, headers, data = self._http("GET", f"/jobs/{int(id)}")
            self._raise_for(status, headers, data)
        if not isinstance(data, dict):
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return data


_default: Optional[Client] = None
_default_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide client that :func:`curfew.enqueue` uses."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Client()
    return _default
