"""The SDK's exceptions."""

from __future__ import annotations

from typing import Optional


class CurfewError(Exception):
    """Base class of every error the SDK raises."""


class NotConfigured(CurfewError):
    """No address to reach curfew: not running under curfew, or neither
    ``CURFEW_ADMIN_URL`` nor ``CURFEW_CONTROL_SOCKET`` is set (pass
    ``url=`` to :class:`curfew.Client`)."""


class Unreachable(CurfewError):
    """curfew did not answer: not running, the address is wrong, or the
    connection broke. If the request was never sent (curfew could not be
    reached, or the message says "nothing was sent"), nothing was stored.
    If the connection dropped, or the answer timed out, after the request
    was sent (the message says "may have been stored"), curfew may have
    stored the job: sending it again is safe only with the same
    ``idempotency_key``, so give every job that must not run twice one.
    The SDK itself sends a request again (once, on a new connection) only
    when curfew cannot have acted on it or every job in it has a key."""


class RequestError(CurfewError):
    """curfew refused the request (HTTP 4xx): a bad field (400), a payload
    over ``jobs.max_payload`` (413), an unknown queue (422), no ``[jobs]``
    section (404). ``message`` is curfew's own explanation. Over the
    control socket the status is the HTTP API's, which curfew sends with
    the answer; ``status`` is ``None`` when it sent none (a curfew older
    than this SDK, or a refusal before the job API, e.g. no ``[jobs]``)."""

    def __init__(self, status: Optional[int], message: str) -> None:
        self.status = status
        self.message = message
        where = f"HTTP {status}" if status is not None else "control socket"
        super().__init__(f"curfew refused the job ({where}): {message}")


class ServerError(CurfewError):
    """curfew failed the request (HTTP 5xx), e.g. 503 + ``retry_after``
    seconds. Only a 503 saying curfew was busy (its store turns were all
    taken: "nothing was done") means nothing was stored. Any other 503 (the
    job store unreachable, or curfew stopping in the middle of the write)
    or 500 may have stored the job: send it again after ``retry_after``
    with the same ``idempotency_key`` (with one, a retry is always safe;
    without one it may make a second job)."""

    def __init__(self, status: int, message: str, retry_after: Optional[float] = None) -> None:
        self.status = status
        self.message = message
        self.retry_after = retry_after
        hint = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"curfew could not take the job (HTTP {status}): {message}{hint}")


class Retry(Exception):
    """Raise from a job handler to run the job again later without spending
    an attempt (curfew's "snooze": the handler answers 429 with
    ``Retry-After``).

    ``after`` is seconds (``int``/``float``) or a ``datetime.timedelta``;
    ``None`` lets curfew pick (10 s). curfew rounds it up to whole seconds
    and holds it between 1 s and one hour: a longer ``after`` (``inf``
    included) is one hour, here already (``Retry(after=7200).after`` is
    ``3600.0``). A negative or NaN ``after`` is a ``ValueError``.
    """

    #: curfew's longest snooze (``MAX_SNOOZE`` in src/processor/verdict.rs).
    MAX_AFTER = 3600.0

    def __init__(self, after: object = None, reason: str = "") -> None:
        seconds: Optional[float]
        if after is None:
            seconds = None
        elif hasattr(after, "total_seconds"):
            seconds = float(after.total_seconds())
        elif isinstance(after, (int, float)) and not isinstance(after, bool):
            seconds = float(after)
        else:
            raise TypeError(f"Retry(after=...) takes seconds or a timedelta, not {after!r}")
        if seconds is not None:
            if not seconds >= 0:  # NaN too
                raise ValueError(f"Retry(after=...) must be 0 or more seconds, not {after!r}")
            seconds = min(seconds, self.MAX_AFTER)
        self.after = seconds
        self.reason = reason
        super().__init__(reason or "retry later")
