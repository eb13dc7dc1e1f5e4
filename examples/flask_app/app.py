"""Minimal Flask (WSGI) example app for curfew.

Run under curfew, e.g.:  curfew serve -w 2 -- gunicorn --bind fd://3 --workers 1 app:app
"""
import os
import time

from flask import Flask, jsonify, request

VERSION = os.environ.get("APP_VERSION", "1")
# When set, every job delivery appends "<id> <attempt> <kind> <pid>" here.
JOBS_LOG = os.environ.get("JOBS_LOG")
# Set by curfew for its workers when [jobs] is on; every job delivery carries
# it in X-Curfew-Job-Token (curfew strips that header from client requests).
JOB_TOKEN = os.environ.get("CURFEW_JOB_TOKEN")

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(
        ok=True,
        worker=os.environ.get("CURFEW_WORKER_ID"),
        pid=os.getpid(),
        version=VERSION,
    )


@app.get("/health")
def health():
    return jsonify(status="ok")


@app.get("/sleep")
def sleep():
    ms = request.args.get("ms", default=0, type=int)
    time.sleep(ms / 1000)
    return jsonify(slept_ms=ms)


@app.get("/spin")
def spin():
    # A wedged worker: never returns.
    while True:
        pass


@app.post("/jobs/echo")
def echo():
    return jsonify(request.get_json(force=True))


@app.post("/jobs/<kind>")
def job(kind):
    """Background jobs delivered by curfew ([jobs] in curfew.toml)."""
    if JOB_TOKEN is None or request.headers.get("X-Curfew-Job-Token") != JOB_TOKEN:
        return "job endpoints are for curfew only", 403
    payload = request.get_json(force=True)
    job_id = request.headers.get("X-Job-Id")
    attempt = request.headers.get("X-Job-Attempt")
    if JOBS_LOG:
        with open(JOBS_LOG, "a") as f:
            f.write(f"{job_id} {attempt} {kind} {os.getpid()}\n")
    if kind == "sleep":
        time.sleep(payload.get("ms", 0) / 1000)
    elif kind == "fail":
        return "failing on purpose", 500
    elif kind == "send_email":
        print(f"sending email to {payload.get('to')} (job {job_id}, attempt {attempt})", flush=True)
    return jsonify(ok=True, job=job_id, attempt=attempt)


@app.get("/plain")
def plain():
    return "hello", 200, {"Content-Type": "text/plain; charset=utf-8"}
