"""Job handlers: ``@curfew.job("kind")``, and the delivery endpoint's rules
that the framework adapters (``curfew.asgi``, ``curfew.flask``,
``curfew.django``) share.

curfew delivers a job as ``POST <path>`` (default ``/jobs/{kind}``) with the
payload as the JSON body and the headers ``X-Curfew-Job-Token``,
``X-Job-Id``, ``X-Job-Attempt``, ``X-Job-Max-Attempts``, ``X-Job-Kind``,
``X-Job-Queue``. The answer is the verdict (curfew's
``src/processor/verdict.rs``):

==========================================  ===================================
the handler                                 answer → what curfew does
==========================================  ===================================
returns                                     200 → succeeded
raises ``curfew.Retry(after=s)``            429 + ``Retry-After: s`` → postponed
                                            by ``s`` (10 s without), attempt
                                            not spent
raises anything else                        500, body ``Type: message`` → a
                                            failed attempt whose error is
                                            ``HTTP 500: Type: message``
no handler for the kind                     404 → a failed attempt
token missing or wrong                      403 (and nothing runs)
==========================================  ===================================
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import inspect
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar, Union, overload

from ._errors import Retry

log = logging.getLogger("curfew")

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_HEADER = "x-curfew-job-token"

#: (status, headers, body) of a delivery's answer.
Answer = Tuple[int, List[Tuple[str, str]], bytes]


@dataclass(frozen=True)
class JobInfo:
    """The job being run, from curfew's delivery headers."""

    id: int
    attempt: int
    max_attempts: int
    kind: str
    queue: str


_current: contextvars.ContextVar[Optional[JobInfo]] = contextvars.ContextVar("curfew_job", default=None)


def current_job() -> Optional[JobInfo]:
    """The job this handler runs (``None`` outside a job handler)."""
    return _current.get()


@dataclass(frozen=True)
class _Run:
    """A checked delivery, ready to run."""

    handler: "_Handler"
    args: Tuple[Any, ...]
    info: JobInfo


@dataclass
class _Handler:
    kind: str
    func: Callable[..., Any]
    is_async: bool
    wants_info: bool
    queue: Optional[str]


class Registry:
    """Job kinds and their handlers. :func:`curfew.job` registers into
    :data:`curfew.registry`; make your own to serve different kinds on
    different endpoints."""

    def __init__(self) -> None:
        self._handlers: Dict[str, _Handler] = {}

    def job(self, kind: Union[str, Callable[..., Any], None] = None, *, queue: Optional[str] = None) -> Any:
        """Registers a function (sync or ``async``) as the handler of
        ``kind`` (default: the function's name). It is called with the
        payload, and with a :class:`JobInfo` too if it takes a second
        positional parameter. An object with an ``async def __call__``, or a
        sync wrapper (a decorator) returning an ``async`` function's
        coroutine, is awaited like an ``async`` handler: the job succeeds
        only once that coroutine has returned. The decorated function is
        returned unchanged, with an ``enqueue(payload, **options)``
        attribute that enqueues this kind (into ``queue`` unless given)."""
        if callable(kind):
            return self._register(kind.__name__, kind, queue)

        def decorate(func: F) -> F:
            return self._register(kind or func.__name__, func, queue)

        return decorate

    def _register(self, kind: str, func: F, queue: Optional[str]) -> F:
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a job kind is a non-empty string, not {kind!r}")
        if kind in self._handlers and self._handlers[kind].func is not func:
            raise ValueError(
                f"job kind {kind!r} has a handler already ({self._handlers[kind].func.__qualname__})"
            )
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        self._handlers[kind] = _Handler(
            kind=kind,
            func=func,
            is_async=_is_async(func),
            wants_info=len(params) >= 2,
            queue=queue,
        )

        def enqueue(payload: Any = None, **options: Any) -> Any:
            from ._client import default_client

            if queue is not None:
                options.setdefault("queue", queue)
            return default_client().enqueue(kind, payload, **options)

        func.enqueue = enqueue  # type: ignore[attr-defined]
        return func

    def kinds(self) -> List[str]:
        return sorted(self._handlers)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds())

    # -- delivery ------------------------------------------------------------

    def _prepare(
        self, kind_from_path: Optional[str], headers: Mapping[str, str], body: bytes
    ) -> Union[Answer, _Run]:
        """Checks a delivery: the answer to send at once, or what to run.
        ``headers`` has lower-case names."""
        expected = os.environ.get("CURFEW_JOB_TOKEN", "")
        given = headers.get(TOKEN_HEADER, "")
        if not expected:
            return _text(
                403,
                "job endpoints answer only curfew's deliveries: CURFEW_JOB_TOKEN is not set "
                "(run under curfew with a [jobs] section)",
            )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _text(403, "job endpoints answer only curfew's deliveries (X-Curfew-Job-Token)")
        kind = headers.get("x-job-kind") or kind_from_path or ""
        handler = self._handlers.get(kind)
        if handler is None:
            known = ", ".join(self.kinds()) or "none"
            return _text(404, f"no handler for job kind {kind!r} (registered: {known})")
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as e:
            return _text(400, f"the payload is not JSON: {e}")
        info = JobInfo(
            id=_int(headers.get("x-job-id")),
            attempt=_int(headers.get("x-job-attempt")),
            max_attempts=_int(headers.get("x-job-max-attempts")),
            kind=kind,
            queue=headers.get("x-job-queue", ""),
        )
        args = (payload, info) if handler.wants_info else (payload,)
        return _Run(handler, args, info)

    def handle(self, kind: Optional[str], headers: Mapping[str, str], body: bytes) -> Answer:
        """Runs one delivery in this thread (an ``async`` handler in a new
        event loop) and returns the answer."""
        prepared = self._prepare(kind, headers, body)
        if not isinstance(prepared, _Run):
            return prepared
        handler, args, info = prepared.handler, prepared.args, prepared.info
        token = _current.set(info)
        try:
            if handler.is_async:
                asyncio.run(_awaited(handler.func(*args)))
            else:
                result = handler.func(*args)
                # An async function behind a sync wrapper (a tracing or retry
                # decorator) returns its coroutine: run it, or the job would
                # be reported done without its body having run.
                if inspect.isawaitable(result):
                    asyncio.run(_awaited(result))
        except Retry as r:
            return _retry(r, info)
        except Exception as e:
            return _failed(e, info)
        finally:
            _current.reset(token)
        return _ok()

    async def handle_async(self, kind: Optional[str], headers: Mapping[str, str], body: bytes) -> Answer:
        """Runs one delivery on the running event loop (a sync handler in a
        worker thread, so it does not block the loop) and returns the
        answer."""
        prepared = self._prepare(kind, headers, body)
        if not isinstance(prepared, _Run):
            return prepared
        handler, args, info = prepared.handler, prepared.args, prepared.info
        token = _current.set(info)
        try:
            if handler.is_async:
                await handler.func(*args)
            else:
                ctx = contextvars.copy_context()
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(None, lambda: ctx.run(handler.func, *args))
                # A sync wrapper around an async function: its coroutine
                # runs here, on the loop (not in the executor's thread).
                if inspect.isawaitable(result):
                    await result
        except Retry as r:
            return _retry(r, info)
        except Exception as e:
            return _failed(e, info)
        finally:
            _current.reset(token)
        return _ok()


def _is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` gives a coroutine: an ``async def`` function,
    or an object whose ``__call__`` is one (a class is called to make an
    instance, so its own ``__call__`` does not count). A sync wrapper around
    an ``async`` function cannot be told from its signature; the delivery
    awaits whatever a handler returns that is awaitable."""
    if inspect.iscoroutinefunction(func):
        return True
    if inspect.isclass(func) or inspect.isfunction(func) or inspect.ismethod(func):
        return False
    return inspect.iscoroutinefunction(getattr(func, "__call__", None))


async def _awaited(awaitable: Any) -> Any:
    """``asyncio.run`` takes a coroutine; a handler may return any awaitable."""
    return await awaitable


def _int(v: Optional[str]) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0


def _text(status: int, message: str, extra: Optional[List[Tuple[str, str]]] = None) -> Answer:
    headers = [("content-type", "text/plain; charset=utf-8")] + (extra or [])
    return status, headers, message.encode()


def _ok() -> Answer:
    return 200, [("content-type", "application/json")], b'{"ok": true}'


def _retry(r: Retry, info: JobInfo) -> Answer:
    extra = []
    if r.after is not None:
        # curfew reads delay-seconds as a whole number, and snoozes at most
        # an hour (a Retry whose ``after`` was set by hand may be past it).
        after = r.after if r.after >= 0 else 0.0
        extra.append(("retry-after", str(math.ceil(min(after, Retry.MAX_AFTER)))))
    log.info("job %s (%s) asks to be retried later: %s", info.id, info.kind, r)
    return _text(429, r.reason or "retry later", extra)


def _failed(e: Exception, info: JobInfo) -> Answer:
    log.exception("job %s (%s) attempt %s failed", info.id, info.kind, info.attempt)
    message = str(e)
    return _text(500, f"{type(e).__name__}: {message}" if message else type(e).__name__)


#: The registry :func:`curfew.job` adds to and the adapters serve by default.
registry = Registry()


@overload
def job(kind: Callable[..., Any]) -> Any: ...
@overload
def job(kind: Optional[str] = None, *, queue: Optional[str] = None) -> Callable[[F], F]: ...
def job(kind: Any = None, *, queue: Optional[str] = None) -> Any:
    """``@curfew.job("send_email")``: registers the function as the handler
    of a job kind in :data:`registry`; see :meth:`Registry.job`."""
    return registry.job(kind, queue=queue)
