"""Minimal FastAPI (ASGI) example app for curfew.

Run under curfew, e.g.:  curfew serve -w 4 -- uvicorn app:app --fd 3
"""
import asyncio
import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

VERSION = os.environ.get("APP_VERSION", "1")
# When set, every job delivery appends "<id> <attempt> <kind> <pid>" here.
JOBS_LOG = os.environ.get("JOBS_LOG")
# Set by curfew for its workers when [jobs] is on; every job delivery carries
# it in X-Curfew-Job-Token (curfew strips that header from client requests).
JOB_TOKEN = os.environ.get("CURFEW_JOB_TOKEN")

app = FastAPI()


@app.get("/")
async def index():
    return {
        "ok": True,
        "worker": os.environ.get("CURFEW_WORKER_ID"),
        "pid": os.getpid(),
        "version": VERSION,
    }


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


@app.post("/jobs/echo")
async def echo(request: Request):
    return await request.json()


@app.post("/jobs/{kind}")
async def job(kind: str, request: Request):
    """Background jobs delivered by curfew ([jobs] in curfew.toml)."""
    if JOB_TOKEN is None or request.headers.get("x-curfew-job-token") != JOB_TOKEN:
        return PlainTextResponse("job endpoints are for curfew only", status_code=403)
    payload = await request.json()
    job_id = request.headers.get("x-job-id")
    attempt = request.headers.get("x-job-attempt")
    if JOBS_LOG:
        with open(JOBS_LOG, "a") as f:
            f.write(f"{job_id} {attempt} {kind} {os.getpid()}\n")
    if kind == "sleep":
        await asyncio.sleep(payload.get("ms", 0) / 1000)
    elif kind == "fail":
        return PlainTextResponse("failing on purpose", status_code=500)
    elif kind == "send_email":
        print(f"sending email to {payload.get('to')} (job {job_id}, attempt {attempt})", flush=True)
    return {"ok": True, "job": job_id, "attempt": attempt}


@app.get("/plain", response_class=PlainTextResponse)
async def plain():
    return PlainTextResponse("hello")
