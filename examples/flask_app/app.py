"""Minimal Flask (WSGI) example app for curfew.

Run under curfew, e.g.:  curfew serve -w 2 -- gunicorn --bind fd://3 --workers 1 app:app
"""
import os
import time

from flask import Flask, jsonify, request

VERSION = os.environ.get("APP_VERSION", "1")

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


@app.get("/plain")
def plain():
    return "hello", 200, {"Content-Type": "text/plain; charset=utf-8"}
