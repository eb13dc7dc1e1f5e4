"""The enqueue client against stand-ins for curfew (a control socket and an
HTTP server that answer what a test tells them), for the answers a real
curfew gives only in rare moments: a failure with its status over the
control socket, curfew stopping, a connection dropped after the request."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

import curfew


class FakeControl:
    """A control socket answering each request with the next canned answer
    (a dict, sent as one JSON line), recording the requests."""

    def __init__(self, path: Path, answers: List[Dict[str, Any]]) -> None:
        self.path = path
        self.answers = list(answers)
        self.requests: List[Dict[str, Any]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            with conn:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    line += chunk
                self.requests.append(json.loads(line))
                conn.sendall(json.dumps(self.answers.pop(0)).encode() + b"\n")

    def close(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.server.close()
        self.thread.join(5)


@pytest.fixture()
def control(tmp_path):
    made = []

    def make(*answers):
        c = FakeControl(tmp_path / f"ctl{len(made)}.sock", list(answers))
        made.append(c)
        return curfew.Client(f"control:{c.path}"), c

    yield make
    for c in made:
        c.close()


def test_control_answer_with_http_status_maps_like_http(control):
    client, _ = control(
        {"ok": False, "error": "unknown queue \"nope\"", "http_status": 422},
        {"ok": False, "error": "the job store is busy", "http_status": 503, "retry_after": 1},
        {"ok": False, "error": "store gone", "http_status": 503},
        {"ok": False, "error": "payload too large", "http_status": 413},
        {"ok": False, "error": "boom", "http_status": 500},
    )
    with pytest.raises(curfew.RequestError) as e:
        client.enqueue("k", queue="nope")
    assert (e.value.status, e.value.message) == (422, 'unknown queue "nope"')
    with pytest.raises(curfew.ServerError) as e:
        client.enqueue("k")
    assert (e.value.status, e.value.retry_after) == (503, 1.0)
    assert "busy" in e.value.message
    with pytest.raises(curfew.ServerError) as e:
        client.enqueue_many([("k", {})])
    assert (e.value.status, e.value.retry_after) == (503, None)
    with pytest.raises(curfew.RequestError) as e:
        client.enqueue("k")
    assert e.value.status == 413
    with pytest.raises(curfew.ServerError) as e:
        client.job(1)
    assert e.value.status == 500


def test_control_answer_without_http_status_is_as_before(control):
    # An older curfew, or a refusal before the job API (no [jobs] section).
    client, fake = control(
        {"ok": False, "error": "this curfew has no job processor: add a [jobs] section"},
        {"ok": True, "data": {"id": 3, "created": True, "queue": "default"}},
    )
    with pytest.raises(curfew.RequestError) as e:
        client.enqueue("k")
    assert e.value.status is None and "[jobs]" in e.value.message
    assert client.enqueue("k") == curfew.Job(id=3, created=True, queue="default")
    assert fake.requests[1] == {"cmd": "jobs", "request": {"op": "enqueue", "job": {"kind": "k"}}}


@pytest.mark.parametrize(
    "error",
    [
        # src/control.rs, when curfew stops before answering.
        "curfew is shutting down",
        # EnqueueError::ShuttingDown, from an older curfew without http_status.
        "curfew is shutting down: the job may or may not have been stored; retry with the same idempotency key",
    ],
)
def test_control_answer_curfew_stopping_is_a_503(control, error):
    client, _ = control({"ok": False, "error": error})
    with pytest.raises(curfew.ServerError) as e:
        client.enqueue("k")
    assert e.value.status == 503 and e.value.message == error
