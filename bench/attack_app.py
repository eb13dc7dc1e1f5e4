"""The Flask app of bench/attack_bench.py (same app under every setup).

    GET  /         a small text body: the normal traffic measured with wrk
    GET  /big      1 MiB (or ?size=N bytes): what the slow readers ask for
    POST /upload   reads the whole request body, answers its length: what the
                   slow uploaders and the bad-chunk flood send to
"""
from flask import Flask, Response, request

app = Flask(__name__)

_MIB = b"x" * (1 << 20)


@app.get("/")
def index():
    return Response("hello, world\n", mimetype="text/plain")


@app.get("/big")
def big():
    size = min(int(request.args.get("size", 1 << 20)), 64 << 20)
    body = _MIB * (size >> 20) + _MIB[: size & ((1 << 20) - 1)]
    return Response(body, mimetype="application/octet-stream")


@app.post("/upload")
def upload():
    data = request.get_data()
    return Response(f"{len(data)}\n", mimetype="text/plain")
