"""The job endpoint as an ASGI app, for FastAPI, Starlette or any ASGI
framework::

    import curfew, curfew.asgi
    from fastapi import FastAPI

    app = FastAPI()
    app.mount("/jobs", curfew.asgi.jobs_app())

    @curfew.job("send_email")
    async def send_email(payload):
        ...

curfew delivers ``POST /jobs/send_email``; the kind is taken from the
``X-Job-Kind`` header (the last path segment as a fallback), so the mount
point only has to match the queue's ``path`` (default ``/jobs/{kind}``).
``async`` handlers run on the server's event loop, plain functions in a
worker thread.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional
from urllib.parse import unquote

from ._jobs import Registry, registry as _default_registry

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]

#: Largest delivery body read (curfew's ``jobs.max_payload`` defaults to 1 MiB).
MAX_BODY = 64 * 1024 * 1024


class JobsApp:
    """An ASGI app that runs the jobs of ``registry`` (default: the one
    ``@curfew.job`` fills)."""

    def __init__(self, registry: Optional[Registry] = None) -> None:
        self.registry = registry or _default_registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _answer(send, 405, [("allow", "POST"), ("content-type", "text/plain")], b"POST only\n")
            return
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > MAX_BODY:
                await _answer(send, 413, [("content-type", "text/plain")], b"payload too large\n")
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "").rstrip("/")
        kind = unquote(path.rsplit("/", 1)[-1]) if path else None
        status, out_headers, out = await self.registry.handle_async(kind, headers, b"".join(chunks))
        await _answer(send, status, out_headers, out)


async def _answer(send: Send, status: int, headers: Any, body: bytes) -> None:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def jobs_app(registry: Optional[Registry] = None) -> JobsApp:
    """The job endpoint as an ASGI app: ``app.mount("/jobs", jobs_app())``."""
    return JobsApp(registry)
