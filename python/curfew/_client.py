"""Enqueueing jobs: a small HTTP client for curfew's job API (``POST /jobs``
on the admin address), with the control socket as a fallback.

Where curfew is: ``CURFEW_ADMIN_URL`` (``http://127.0.0.1:9000`` or
``unix:/path/admin.sock``), which curfew sets for its workers when
``admin_bind`` is configured; else ``CURFEW_CONTROL_SOCKET``, which curfew
always sets for its workers (the same jobs requests, one connection each).
If the job API at ``CURFEW_ADMIN_URL`` refuses this process (403: an admin
address reachable from other hosts without ``admin_token``) and
``CURFEW_CONTROL_SOCKET`` is set, the client logs a warning and uses the
control socket from then on (an address passed as ``url=`` is kept).
Outside curfew (a script, a cron job, a test), set one of them or pass
``url=``.

One keep-alive connection per thread (and per process, so a fork after the
first enqueue does not share a socket) is reused for every request. One that
curfew closed while it was idle is replaced before a request is written to
it. If a kept-alive connection still drops under a request, the request is
sent again on a new connection only when that cannot make a second job: it
failed while being written (curfew never had all of it), or it is a read,
or every job in it has an ``idempotency_key`` (then the repeat returns the
job the first copy stored, if it did, and ``Job.created`` is ``None``:
unknown). Otherwise :class:`Unreachable` says the job may have been stored.
The SDK never adds an idempotency key of its own: a key stays with its job in
curfew's store (until ``[jobs.retention]`` prunes the job) and would change
what is stored, so only the caller's keys make a repeat safe.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import logging
import math
import os
import select
import socket
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from ._errors import NotConfigured, RequestError, ServerError, Unreachable

log = logging.getLogger("curfew")

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
    one; ``None``: not known, e.g. a transactional enqueue, or the SDK sent
    the request again after the connection dropped and curfew found the
    key's job, which the first copy may have stored) and its ``queue``."""

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


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection is readable: curfew closed it
    (an end of file waits) or sent something unasked; either way it cannot
    carry a request."""
    try:
        if hasattr(select, "poll"):  # any descriptor number, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


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
        # The address is CURFEW_ADMIN_URL (not given by the caller): a job API
        # refused there (403) sends the client to CURFEW_CONTROL_SOCKET.
        self._admin_from_env = False
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
                self._admin_from_env = True
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
        """This thread's connection and whether it is a kept-alive one that
        was used before (and looks open: one curfew closed while it was idle
        is dropped here, before a request is written to it)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and getattr(local, "pid", None) == os.getpid():
            if conn.sock is None:  # http.client opens a new one
                return conn, False
            if _closed_by_peer(conn.sock):
                conn.close()
                return conn, False
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
        self, method: str, path: str, body: Optional[bytes] = None, *, resend_safe: bool = False
    ) -> Tuple[int, Dict[str, str], JSON, bool]:
        """(status, headers, body, resent): ``resent`` when the answer is to
        a second copy of the request, sent after the first one was written
        and the connection then dropped (only when ``resend_safe``)."""
        _, _, base = self._target()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = self._token if self._token is not None else os.environ.get("CURFEW_ADMIN_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # What a dropped connection after the request was written means: a
        # POST may have been carried out (curfew can commit the job and lose
        # the connection before answering).
        maybe = (
            "; the job may have been stored: send it again only if every job carries an "
            "idempotency_key (the same one as in this request)"
            if method == "POST"
            else ""
        )
        resent = False
        for attempt in (1, 2):
            conn, reused = self._connection()
            sent = False
            try:
                conn.request(method, base + path, body=body, headers=headers)
                # Written whole: from here curfew may act on it.
                sent = True
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.HTTPException) as e:
                # (RemoteDisconnected is both a ConnectionResetError and an
                # HTTPException.)
                self.close()
                # The connection was kept alive and dropped under this
                # request (curfew closed it as the request arrived). Sent
                # again on a new connection only if curfew cannot have acted
                # on it (it failed while being written: curfew never had the
                # whole request), or acting twice is harmless (a read, or
                # jobs that all have an idempotency key). The SDK does not
                # add a key of its own: the caller's jobs are stored as given.
                if reused and attempt == 1 and (not sent or resend_safe):
                    resent = sent
                    continue
                if sent:
                    raise Unreachable(
                        f"curfew at {self.url} closed the connection before answering ({e}){maybe}"
                    ) from e
                raise Unreachable(f"curfew at {self.url} closed the connection: {e}; nothing was sent") from e
            except socket.timeout as e:
                self.close()
                if sent:
                    raise Unreachable(
                        f"curfew at {self.url} did not answer within {self.timeout:g} s{maybe}"
                    ) from e
                raise Unreachable(
                    f"curfew at {self.url} did not take the request within {self.timeout:g} s; nothing was sent"
                ) from e
            except OSError as e:
                self.close()
                if sent:
                    raise Unreachable(f"lost the connection to curfew at {self.url}: {e}{maybe}") from e
                raise Unreachable(f"cannot reach curfew at {self.url}: {e}") from e
            if response.will_close:
                self.close()
            try:
                data = json.loads(raw) if raw.strip() else None
            except ValueError:
                data = raw.decode("utf-8", "replace").strip()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data, resent
        raise AssertionError("unreachable")

    def _control(self, request: Dict[str, Any], line: Optional[bytes] = None) -> JSON:
        """One jobs request on the control socket: ``request``, or the
        request line ``line`` already serialized (``request`` then gives
        just its ``op``)."""
        _, path, _ = self._target()
        if line is None:
            line = json.dumps({"cmd": "jobs", "request": request}).encode() + b"\n"
        # Once the request is written, curfew may store the job and still
        # fail to answer (it stops, or the connection breaks).
        maybe = (
            "; the job may have been stored: send it again only if every job carries an "
            "idempotency_key (the same one as in this request)"
            if request.get("op") in ("enqueue", "enqueue_many")
            else ""
        )
        sent = False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(path)
                s.sendall(line)
                sent = True
                chunks = []
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    if chunk.endswith(b"\n"):
                        break
        except socket.timeout as e:
            if sent:
                raise Unreachable(
                    f"curfew's control socket {path} did not answer within {self.timeout:g} s{maybe}"
                ) from e
            raise Unreachable(
                f"curfew's control socket {path} did not take the request within {self.timeout:g} s; "
                "nothing was sent"
            ) from e
        except OSError as e:
            if sent:
                raise Unreachable(f"lost the connection to curfew's control socket {path}: {e}{maybe}") from e
            raise Unreachable(f"cannot reach curfew's control socket {path}: {e}") from e
        try:
            answer = json.loads(b"".join(chunks))
        except ValueError as e:
            raise Unreachable(f"curfew's control socket {path} gave no answer{maybe}") from e
        if not isinstance(answer, dict):
            raise Unreachable(f"curfew's control socket {path} gave no answer{maybe}")
        if not answer.get("ok"):
            self._raise_for_control(answer)
        return answer.get("data")

    def _refused_here(self, status: int) -> bool:
        """After a 403 from the admin address of ``CURFEW_ADMIN_URL``: use
        ``CURFEW_CONTROL_SOCKET`` from now on, if it is set, and say so (the
        request is to be sent again there). curfew refuses the job API with
        403 before doing anything (an admin address reachable from other
        hosts without ``admin_token``, which an older curfew still gave its
        workers as ``CURFEW_ADMIN_URL``); its control socket, for curfew's
        own user only, answers the same requests. An address the caller gave
        is kept: the 403 is raised."""
        if status != 403 or not self._admin_from_env:
            return False
        control = os.environ.get("CURFEW_CONTROL_SOCKET")
        if not control:
            return False
        log.warning(
            "curfew's job API at %s refused this process (HTTP 403); enqueueing through the "
            "control socket %s instead (set admin_token, or leave CURFEW_ADMIN_URL unset)",
            self._url,
            control,
        )
        self.close()
        self._url = "control:" + control
        self._admin_from_env = False
        return True

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
        resent = False
        if self._target()[0] == "control":
            data = self._control({"op": "enqueue", "job": body})
        else:
            status, headers, data, resent = self._http(
                "POST", "/jobs", json.dumps(body).encode(), resend_safe="idempotency_key" in body
            )
            if self._refused_here(status):
                return self._submit(body)
            self._raise_for(status, headers, data)
        if not isinstance(data, dict) or "id" not in data:
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return _job(data, resent)

    #: Jobs per request of :meth:`enqueue_many` (curfew's limit per batch).
    MAX_BATCH = 10_000
    #: Bytes of JSON per request of :meth:`enqueue_many`: curfew refuses a
    #: batch body over 64 MiB (413, ``MAX_BATCH_BODY`` in
    #: src/processor/api.rs); this leaves room for the envelope.
    MAX_BATCH_BYTES = 60 << 20

    def enqueue_many(self, jobs: Iterable[Union[Mapping[str, Any], Tuple[str, JSON]]]) -> List[Job]:
        """Stores several jobs in one request (``POST /jobs`` with a JSON
        array, or one control-socket request): one transaction, all or
        nothing, per batch of at most 10,000 jobs and 60 MiB of JSON (curfew
        takes at most 10,000 jobs and 64 MiB per request). Each item is a
        mapping of :meth:`enqueue`'s arguments (``{"kind": ..., "payload":
        ..., "queue": ...}``) or a ``(kind, payload)`` pair. Every job is
        checked before anything is sent; curfew's error names each bad job
        by its index in its batch. With more than one batch, if a batch
        fails, the exception's ``enqueued`` attribute lists the jobs of the
        batches stored before it; give idempotency keys to send the whole
        list again safely."""
        bodies = []
        for item in jobs:
            if isinstance(item, tuple):
                kind, payload = item
                bodies.append(job_request(kind, payload))
            else:
                bodies.append(job_request(**item))
        # Each job serialized once: its size decides where a batch ends, and
        # the batch is sent as these bytes.
        encoded = [json.dumps(b).encode() for b in bodies]
        done: List[Job] = []
        start = 0
        while start < len(bodies):
            end, size = start, 2  # "[" and "]"
            while end < len(bodies) and end - start < self.MAX_BATCH:
                grown = size + len(encoded[end]) + (1 if end > start else 0)  # ","
                if grown > self.MAX_BATCH_BYTES and end > start:
                    break
                end, size = end + 1, grown
            try:
                done.extend(self._submit_many(bodies[start:end], encoded[start:end]))
            except Exception as e:
                e.enqueued = list(done)  # type: ignore[attr-defined]
                raise
            start = end
        return done

    def _submit_many(self, bodies: List[Dict[str, Any]], encoded: Optional[List[bytes]] = None) -> List[Job]:
        if encoded is None:
            encoded = [json.dumps(b).encode() for b in bodies]
        array = b"[" + b",".join(encoded) + b"]"
        resent = False
        if self._target()[0] == "control":
            data = self._control(
                {"op": "enqueue_many"},
                line=b'{"cmd": "jobs", "request": {"op": "enqueue_many", "jobs": ' + array + b"}}\n",
            )
        else:
            status, headers, data, resent = self._http(
                "POST",
                "/jobs",
                array,
                resend_safe=all("idempotency_key" in b for b in bodies),
            )
            if self._refused_here(status):
                return self._submit_many(bodies, encoded)
            self._raise_for(status, headers, data)
        answers = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(answers, list) or len(answers) != len(bodies):
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return [_job(a, resent) for a in answers]

    def job(self, id: int) -> Dict[str, Any]:
        """One job as curfew stores it (``state``, ``attempt``,
        ``last_error``, ...)."""
        if self._target()[0] == "control":
            data = self._control({"op": "show", "id": int(id)})
        else:
            status, headers, data, _ = self._http("GET", f"/jobs/{int(id)}", resend_safe=True)
            if self._refused_here(status):
                return self.job(id)
            self._raise_for(status, headers, data)
        if not isinstance(data, dict):
            raise ServerError(500, f"unexpected answer from curfew: {data!r}")
        return data


def _job(answer: Mapping[str, Any], resent: bool) -> Job:
    created: Optional[bool] = bool(answer.get("created", True))
    if resent and not created:
        # The answer to the SDK's second copy: the job of that key may be
        # the one the first copy stored, so whether this call created it is
        # not known.
        created = None
    return Job(id=int(answer["id"]), created=created, queue=str(answer.get("queue", "")))


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
