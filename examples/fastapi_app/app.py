"""Minimal FastAPI (ASGI) example app for curfew, with background jobs
through the curfew SDK.

Run under curfew:  curfew serve -w 4 -- uvicorn app:app --fd 3
(or `bash scripts/run-example.sh` from the repository root).
"""
import asyncio
import os

import curfew
import curfew.asgi
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

VERSION = os.environ.get("APP_VERSION", "1")
# When set, every job delivery appends "<id> <attempt> <kind> <pid>" here.
JOBS_LOG = os.environ.get("JOBS_LOG")

app = FastAPI()
# curfew delivers jobs as POST /jobs/<kind>; the SDK checks the job token
# (constant time) and turns each handler's outcome into the job's verdict.
app.mount("/jobs", curfew.asgi.jobs_app())


def log_delivery(job: curfew.JobInfo) -> None:
    if JOBS_LOG:
        with open(JOBS_LOG, "a") as f:
            f.write(f"{job.id} {job.attempt} {job.kind} {os.getpid()}\n")


@curfew.job("send_email")
async def send_email(payload, job):
    log_delivery(job)
    print(f"sending email to {payload.get('to')} (job {job.id}, attempt {job.attempt})", flush=True)


@curfew.job("sleep")
async def sleep_job(payload, job):
    log_delivery(job)
    await asyncio.sleep(payload.get("ms", 0) / 1000)


@curfew.job("fail")
async def fail(payload, job):
    log_delivery(job)
    raise RuntimeError("failing on purpose")


@curfew.job("noop")
async def noop(payload, job):
    log_delivery(job)


@app.get("/")
async def index(request: Request):
    return {
        "ok": True,
        "worker": os.environ.get("CURFEW_WORKER_ID"),
        "pid": os.getpid(),
        "version": VERSION,
        # What uvicorn made of curfew's X-Forwarded-* (see examples/README.md).
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "server": request.scope.get("server"),
    }


@app.post("/signup")
async def signup(request: Request):
    """Enqueues a welcome email: `curl -XPOST :8000/signup -d '{"email": "a@b.c"}'`."""
    body = await request.json()
    # curfew.enqueue is blocking (a quick local request): off the event loop.
    job = await asyncio.to_thread(curfew.enqueue, "send_email", {"to": body["email"]})
    return {"ok": True, "job": job.id}


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/sleep")
async def sleep(ms: int = 0):
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.get("/spin")
async def spin():
    # A wedged worker: blocks the event loop forever.
    while True:
        pass


@app.get("/plain", response_class=PlainTextResponse)
async def plain():
    return PlainTextResponse("hello")
