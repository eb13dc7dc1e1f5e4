"""Minimal FastAPI (ASGI) example app for curfew.

Run under curfew, e.g.:  curfew serve -w 4 -- uvicorn app:app --fd 3
"""
import asyncio
import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

VERSION = os.environ.get("APP_VERSION", "1")

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


@app.get("/plain", response_class=PlainTextResponse)
async def plain():
    return PlainTextResponse("hello")
