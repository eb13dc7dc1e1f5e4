"""curfew's Python SDK: enqueue jobs and write their handlers.

Enqueue (from any process curfew runs, or anywhere with ``CURFEW_ADMIN_URL``
set)::

    import curfew

    curfew.enqueue("send_email", {"to": "a@b.c"}, queue="mail", delay=60)

Handle (in the app curfew serves; mount the endpoint with
``curfew.asgi``, ``curfew.flask`` or ``curfew.django``)::

    @curfew.job("send_email")
    async def send_email(payload):
        if smtp_is_down():
            raise curfew.Retry(after=30)    # later; the attempt is not spent
        ...                                 # an exception: a failed attempt

Standard library only; the framework adapters import their framework when
used. The ``curfew`` command itself is installed beside this package.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from ._client import Client, Delay, Job, RunAt, UniqueScope, default_client
from ._errors import CurfewError, NotConfigured, RequestError, Retry, ServerError, Unreachable
from ._jobs import JobInfo, Registry, current_job, job, registry

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        __version__ = _version("curfew")
    except PackageNotFoundError:  # running from a source tree
        __version__ = "0+unknown"
except ImportError:  # pragma: no cover
    __version__ = "0+unknown"


def enqueue(
    kind: str,
    payload: Any = None,
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
    """Stores a job and returns it (:class:`Job`: ``id``, ``created``,
    ``queue``).

    - ``payload``: any JSON-serialisable value (default ``{}``), the
      handler's argument.
    - ``queue``: default ``"default"``; it must be one of curfew's
      ``[jobs.queues.*]`` (else :class:`RequestError`, 422).
    - ``run_at`` (a ``datetime``; naive means local time) or ``delay``
      (seconds or a ``timedelta``): not before then.
    - ``priority``: lower runs first (default 0).
    - ``max_attempts``: default the queue's.
    - ``idempotency_key``: at most one job per key; sending it again returns
      the existing job with ``created=False``. Give one to any job that must
      not run twice: it is what makes sending again safe after a
      :class:`ServerError` or :class:`Unreachable` that may have stored the
      job. The key stays with its job until the job is pruned
      (``[jobs.retention]``); the SDK never adds one of its own.
    - ``unique_key`` / ``unique_scope``: at most one job per key while a job
      holds it; sending it again meanwhile returns that job with
      ``created=False``. ``unique_scope``: ``"queued"`` (until it is
      claimed), ``"queued+running"`` (until it finishes; the default) or a
      window from its enqueue (``"10m"`` or a ``timedelta``).

    Raises :class:`RequestError` (4xx: a bad argument, unknown queue, payload
    too large; nothing stored), :class:`ServerError` (5xx; only a 503 saying
    curfew was busy means nothing was stored: any other may have stored the
    job), :class:`Unreachable` (curfew did not answer; if the connection
    dropped after the request was sent, the job may have been stored) or
    :class:`NotConfigured` (no address: see :class:`Client`). Where the job
    may have been stored, sending it again is safe only with the same
    ``idempotency_key``.
    """
    return default_client().enqueue(
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


def enqueue_many(jobs: Iterable[Union[Mapping[str, Any], Tuple[str, Any]]]) -> List[Job]:
    """Stores several jobs in one request, all or nothing; see
    :meth:`Client.enqueue_many`."""
    return default_client().enqueue_many(jobs)


def find_binary() -> str:
    """The path of the ``curfew`` executable installed with this package
    (falling back to the one on ``PATH``)."""
    import shutil

    name = "curfew.exe" if sys.platform == "win32" else "curfew"
    # The user scheme (pip install --user) exists on every supported Python
    # (3.9 included).
    candidates = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")]
    for directory in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"the {name} executable is not installed beside this package nor on PATH")


__all__ = [
    "Client",
    "CurfewError",
    "Job",
    "JobInfo",
    "NotConfigured",
    "Registry",
    "RequestError",
    "Retry",
    "ServerError",
    "Unreachable",
    "current_job",
    "default_client",
    "enqueue",
    "enqueue_many",
    "find_binary",
    "job",
    "registry",
    "__version__",
]
