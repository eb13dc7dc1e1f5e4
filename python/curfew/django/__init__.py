"""Django: the job endpoint as a URLconf, and enqueueing inside the current
database transaction.

``urls.py``::

    from django.urls import include, path

    urlpatterns = [
        ...,
        path("jobs/", include("curfew.django.urls")),   # POST /jobs/<kind>
    ]

Handlers (``@curfew.job``) live in any module Django imports at start, e.g.
``myapp/jobs.py`` imported from ``myapp/apps.py``'s ``ready()``.

Transactional enqueue, :func:`enqueue`: the job exists if and only if the
transaction commits.

- PostgreSQL, when curfew's store is this database (``[jobs] store =
  "postgres://…"`` naming the same database): the job is inserted by the
  ``curfew.enqueue()`` SQL function on Django's own connection, inside the
  transaction. curfew is woken by ``NOTIFY`` at commit.
- Any other database (SQLite, MySQL, PostgreSQL without curfew's schema):
  the job is sent to curfew's API from ``transaction.on_commit``, so it is
  not sent if the transaction rolls back. If curfew cannot be reached at
  that moment the data is committed but the job may not be: the error is
  raised from the commit (see Django's ``on_commit``; it says when the job
  may have been stored); give an ``idempotency_key`` to send it again
  safely.

Settings (all optional): ``CURFEW_TRANSACTIONAL_ENQUEUE`` = ``"auto"``
(default: SQL when the function exists on the connection, else
``on_commit``), ``"sql"`` or ``"on_commit"``; ``CURFEW_PG_SCHEMA`` (default
``"curfew"``, curfew's ``jobs.pg_schema``).
"""

from __future__ import annotations

import functools
import json
from typing import Any, Dict, Optional

from .._client import Delay, Job, RunAt, UniqueScope, default_client, job_request

# The SQL function's signatures: with unique_key and unique_scope (stores
# migrated by this curfew), and before them (an older store).
_SIGNATURES = (
    "enqueue(text,text,jsonb,integer,timestamptz,integer,text,text,text)",
    "enqueue(text,text,jsonb,integer,timestamptz,integer,text)",
)
_has_function: Dict[str, bool] = {}


def _setting(name: str, default: str) -> str:
    from django.conf import settings

    return str(getattr(settings, name, default))


def _use_sql(connection: Any, alias: str) -> bool:
    mode = _setting("CURFEW_TRANSACTIONAL_ENQUEUE", "auto")
    if mode not in ("auto", "sql", "on_commit"):
        raise ValueError(
            f"CURFEW_TRANSACTIONAL_ENQUEUE is {mode!r}: give \"auto\", \"sql\" or \"on_commit\""
        )
    if mode == "on_commit":
        return False
    if connection.vendor != "postgresql":
        if mode == "sql":
            raise ValueError(
                f"CURFEW_TRANSACTIONAL_ENQUEUE = \"sql\" needs PostgreSQL; database {alias!r} is {connection.vendor}"
            )
        return False
    if mode == "sql":
        return True
    if alias not in _has_function:
        schema = _setting("CURFEW_PG_SCHEMA", "curfew")
        with connection.cursor() as cur:
            cur.execute(
                "SELECT to_regprocedure(%s) IS NOT NULL OR to_regprocedure(%s) IS NOT NULL",
                [f"{schema}.{sig}" for sig in _SIGNATURES],
            )
            _has_function[alias] = bool(cur.fetchone()[0])
    return _has_function[alias]


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
    using: Optional[str] = None,
) -> Optional[Job]:
    """Enqueues a job as part of the current transaction of database
    ``using`` (default ``"default"``); the arguments are
    :func:`curfew.enqueue`'s.

    Returns the :class:`curfew.Job` when it is stored now (PostgreSQL's SQL
    function, or no transaction open), ``None`` when it is sent at commit.

    With the SQL function, ``max_attempts`` defaults to 20 (the function
    does not know the queue's setting) and the queue name is not checked
    (a job of an unknown queue waits until a curfew serves that queue).
    """
    from django.db import DEFAULT_DB_ALIAS, connections, transaction

    alias = using or DEFAULT_DB_ALIAS
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
    connection = connections[alias]
    if _use_sql(connection, alias):
        return _enqueue_sql(connection, body)
    send = functools.partial(default_client()._submit, body)
    if not connection.in_atomic_block:
        return send()
    transaction.on_commit(send, using=alias)
    return None


def _enqueue_sql(connection: Any, body: Dict[str, Any]) -> Job:
    schema = connection.ops.quote_name(_setting("CURFEW_PG_SCHEMA", "curfew"))
    queue = body.get("queue", "default")
    run_at = body.get("run_at")
    delay = body.get("delay_s", 0.0)
    # The unique arguments only when given, so an older store's function
    # (without them) still serves the others.
    unique = ""
    if "unique_key" in body:
        unique = ", unique_key => %s, unique_scope => %s"
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT {schema}.enqueue(%s, %s, %s::jsonb, %s, "
            f"COALESCE(%s::timestamptz, now() + %s * interval '1 second'), %s, %s{unique})",
            [
                queue,
                body["kind"],
                json.dumps(body.get("payload", {})),
                body.get("priority", 0),
                run_at,
                delay,
                body.get("max_attempts", 20),
                body.get("idempotency_key"),
            ]
            + ([body["unique_key"], body.get("unique_scope")] if unique else []),
        )
        (job_id,) = cur.fetchone()
    return Job(id=int(job_id), created=None, queue=queue)


__all__ = ["enqueue"]
