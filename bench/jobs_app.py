"""No-op job handler for bench/jobs_bench.py (curfew delivers each job as
`POST /jobs/<kind>`; 2xx = success).

    uvicorn jobs_app:app --fd 3 --no-access-log

Environment (both optional):

- JOBS_APP_GATE: a file path; `GET /ready` answers 503 until it exists, so
  that curfew (with `ready_path = "/ready"`) does not start processing jobs
  before the benchmark has enqueued its backlog.
- JOBS_APP_STAMP_DIR: a directory; every job of kind `stamp` appends
  "<X-Job-Id> <time.time()>" to a file there (one per process), the moment
  the handler runs, for the enqueue → handler latency.
"""

import os
import time

from fastapi import FastAPI, Request, Response

GATE = os.environ.get("JOBS_APP_GATE")
STAMP_DIR = os.environ.get("JOBS_APP_STAMP_DIR")
_stamps = None

app = FastAPI()


@app.post("/jobs/{kind}")
async def job(kind: str, request: Request) -> Response:
    global _stamps
    if kind == "stamp" and STAMP_DIR:
        t = time.time()
        if _stamps is None:
            _stamps = open(os.path.join(STAMP_DIR, f"stamps-{os.getpid()}.txt"), "a", buffering=1)
        _stamps.write(f"{request.headers.get('x-job-id')} {t:.6f}\n")
    return Response(status_code=200)


@app.get("/ready")
async def ready() -> Response:
    if GATE and not os.path.exists(GATE):
        return Response("gate closed\n", status_code=503)
    return Response("ok\n")


@app.get("/health")
async def health() -> Response:
    return Response("ok\n")
