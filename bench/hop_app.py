"""The FastAPI app of bench/hop_bench.py (the same app under every setup).

    GET /plain    "hello" (text/plain): the server's own overhead
    GET /json     ~10 KB of JSON: 40 records through a pydantic response model
    GET /stream   1 MiB, a StreamingResponse of 16 chunks of 64 KiB
    GET /health   readiness
    GET /info     which event loop and HTTP parser this worker runs (checked
                  by the script before it measures anything)
"""
from __future__ import annotations

import asyncio
import os
import sys

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel

app = FastAPI()


class Address(BaseModel):
    street: str
    city: str
    postcode: str
    country: str


class Customer(BaseModel):
    id: int
    name: str
    email: str
    active: bool
    balance: float
    tags: list[str]
    address: Address


# 40 records of ~250 bytes: ~10 KB once serialised. Built once; the response
# model validates and serialises them on every request, as a real endpoint
# returning ORM rows or dicts would.
_CUSTOMERS = [
    {
        "id": i,
        "name": f"Customer number {i:04d}",
        "email": f"customer{i:04d}@example.com",
        "active": i % 3 != 0,
        "balance": round(i * 13.37, 2),
        "tags": ["retail", "newsletter", f"segment-{i % 7}"],
        "address": {"street": f"{i} Long Example Street", "city": "Springfield",
                    "postcode": f"{10000 + i}", "country": "Freedonia"},
    }
    for i in range(40)
]

_CHUNK = b"x" * (64 * 1024)
_CHUNKS = 16  # 1 MiB in all


@app.get("/plain")
async def plain():
    return PlainTextResponse("hello")


@app.get("/json", response_model=list[Customer])
async def json_endpoint():
    return _CUSTOMERS


async def _stream():
    for _ in range(_CHUNKS):
        yield _CHUNK


@app.get("/stream")
async def stream():
    return StreamingResponse(_stream(), media_type="application/octet-stream")


@app.get("/health")
async def health():
    return PlainTextResponse("ok")


@app.get("/info")
async def info():
    loop = type(asyncio.get_running_loop())
    return {
        "pid": os.getpid(),
        "loop": f"{loop.__module__}.{loop.__qualname__}",
        # uvicorn imports only the HTTP protocol it runs (auto: httptools when installed)
        "http": sorted(m for m in sys.modules
                       if m.startswith("uvicorn.protocols.http.") and m.endswith("_impl")),
        "server": [m for m in ("uvicorn", "granian", "gunicorn") if m in sys.modules],
    }
