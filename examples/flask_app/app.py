"""Minimal Flask (WSGI) example app for curfew, with background jobs
through the curfew SDK.

Run under curfew:  curfew serve -w 2 -- gunicorn --workers 1 --no-control-socket app:app
"""
import os
import time

import curfew
import curfew.flask
from flask import Flask, jsonify, request

VERSION = os.environ.get("APP_VERSION", "1")
# When set, every job delivery appends "<id> <attempt> <kind> <pid>" here.
JOBS_LOG = os.environ.get("JOBS_LOG")

app = Flask(__name__)
# curfew delivers jobs as POST /jobs/<kind>; the SDK checks the job token
# (constant time) and turns each handler's outcome into the job's verdict.
app.register_blueprint(curfew.flask.blueprint())


def log_delivery(job: curfew.JobInfo) -> None:
    if JOBS_LOG:
        with open(JOBS_LOG, "a") as f:
            f.write(f"{job.id} {job.attempt} {job.kind} {os.getpid()}\n")


@curfew.job("send_email")
def send_email(payload, job):
    log_delivery(job)
    print(f"sending email to {payload.get('to')} (job {job.id}, attempt {job.attempt})", flush=True)


@curfew.job("sleep")
def sleep_job(payload, job):
    log_delivery(job)
    time.sleep(payload.get("ms", 0) / 1000)


@curfew.job("fail")
def fail(payload, job):
    log_delivery(job)
    raise RuntimeError("failing on purpose")


@curfew.job("noop")
def noop(payload, job):
    log_delivery(job)


@app.get("/")
def index():
    return jsonify(
        ok=True,
        worker=os.environ.get("CURFEW_WORKER_ID"),
        pid=os.getpid(),
        version=VERSION,
    )


@app.post("/signup")
def signup():
    """Enqueues a welcome email: `curl -XPOST :8000/signup -d '{"email": "a@b.c"}'`."""
    job = curfew.enqueue("send_email", {"to": request.get_json(force=True)["email"]})
    return jsonify(ok=True, job=job.id)


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


@app.get("/plain")
def plain():
    return "hello", 200, {"Content-Type": "text/plain; charset=utf-8"}
