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
        self.sizes: List[int] = []
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
                request = json.loads(line)
                self.requests.append(request)
                self.sizes.append(len(line))
                answer = self.answers.pop(0)
                if callable(answer):
                    answer = answer(request)
                conn.sendall(json.dumps(answer).encode() + b"\n")

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


class FakeHTTP:
    """An HTTP/1.1 server on loopback doing, for each request in arrival
    order, the next action: ``("answer", status, body)`` (keep-alive),
    ``("answer_close", status, body)`` (then closes, as curfew does with an
    idle connection) or ``"drop"`` (reads the whole request, then closes
    without answering: curfew committed the job and lost the connection).
    Records each request as (connection number, method, path, body)."""

    def __init__(self, actions: List[Any]) -> None:
        self.actions = list(actions)
        self.requests: List[Any] = []
        self.sizes: List[int] = []
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.url = "http://127.0.0.1:%d" % self.server.getsockname()[1]
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            n += 1
            threading.Thread(target=self._serve, args=(conn, n), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = 0
                for h in lines[1:]:
                    name, _, value = h.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                with self.lock:
                    self.requests.append((n, method, path, json.loads(body) if body else None))
                    self.sizes.append(len(body))
                    action = self.actions.pop(0)
                if action == "drop":
                    return
                kind, status, answer = action
                if callable(answer):
                    answer = answer(self.requests[-1][3])
                out = json.dumps(answer).encode()
                conn.sendall(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (status, len(out), out)
                )
                if kind == "answer_close":
                    # Closed: the end of file goes out, and whatever comes
                    # after is never seen (read and dropped, so that the
                    # client's writes succeed, as across a network, where
                    # the reset comes back only after they are sent).
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                    return

    def close(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.server.close()


@pytest.fixture()
def http_fake():
    made = []

    def make(*actions):
        f = FakeHTTP(list(actions))
        made.append(f)
        return curfew.Client(f.url), f

    yield make
    for f in made:
        f.close()


def created(id, c=True):
    return ("answer", 201 if c else 200, {"id": id, "created": c, "queue": "default"})


def test_a_dropped_post_without_idempotency_key_is_not_sent_again(http_fake):
    # The kept-alive connection drops after the request was written: curfew
    # may have stored the job, so a second copy could be a duplicate.
    client, fake = http_fake(created(1), "drop", created(3))
    assert client.enqueue("k", {"n": 1}).id == 1
    with pytest.raises(curfew.Unreachable, match="may have been stored") as e:
        client.enqueue("k", {"n": 2})
    assert "idempotency_key" in str(e.value)
    assert [r[3] for r in fake.requests] == [{"kind": "k", "payload": {"n": 1}}, {"kind": "k", "payload": {"n": 2}}]
    # Nor a batch with a job that has no key.
    client2, fake2 = http_fake(created(1), "drop", created(3))
    client2.enqueue("k", idempotency_key="a")
    with pytest.raises(curfew.Unreachable, match="may have been stored"):
        client2.enqueue_many([{"kind": "k", "idempotency_key": "b"}, ("k", {})])
    assert len(fake2.requests) == 2


def test_a_dropped_post_with_idempotency_keys_is_sent_again(http_fake):
    client, fake = http_fake(created(1), "drop", created(2, c=False))
    client.enqueue("k", idempotency_key="a")
    job = client.enqueue("k", {"n": 2}, idempotency_key="b")
    # The second copy found the key's job: maybe the first copy stored it.
    assert (job.id, job.created) == (2, None)
    assert [(r[0], r[3]) for r in fake.requests[1:]] == [
        (1, {"kind": "k", "payload": {"n": 2}, "idempotency_key": "b"}),
        (2, {"kind": "k", "payload": {"n": 2}, "idempotency_key": "b"}),
    ]
    # A batch whose jobs all have keys, too; the SDK adds no key of its own.
    client2, fake2 = http_fake(
        created(1),
        "drop",
        ("answer", 201, {"jobs": [{"id": 5, "created": False}, {"id": 6, "created": True}], "created": 1}),
    )
    client2.enqueue("k")
    jobs = client2.enqueue_many([{"kind": "k", "idempotency_key": "c"}, {"kind": "k", "idempotency_key": "d"}])
    assert [(j.id, j.created) for j in jobs] == [(5, None), (6, True)]
    assert fake2.requests[1][3] == fake2.requests[2][3]
    assert "idempotency_key" not in fake2.requests[0][3]


def test_a_connection_closed_while_idle_is_replaced_before_sending(http_fake):
    # curfew closes an idle kept-alive connection: the next request goes on
    # a new one, once, with no error and no key needed.
    import time

    client, fake = http_fake(("answer_close", 201, {"id": 1, "created": True}), created(2))
    client.enqueue("k", {"n": 1})
    time.sleep(0.2)  # the close reaches the client
    assert client.enqueue("k", {"n": 2}).id == 2
    assert [(r[0], r[3]["payload"]) for r in fake.requests] == [(1, {"n": 1}), (2, {"n": 2})]


def batch_answer(jobs):
    """What curfew answers a batch: an id for each job, here its payload's."""
    return {"jobs": [{"id": j["payload"]["id"], "created": True, "queue": "default"} for j in jobs]}


def test_enqueue_many_closes_a_batch_before_curfew_s_size_limit(http_fake, control):
    # curfew refuses a batch body over 64 MiB (413) whatever the count: a
    # batch ends before MAX_BATCH_BYTES, here made small.
    jobs = [("k", {"id": i, "pad": "x" * 300}) for i in range(1, 11)]
    client, fake = http_fake(*[("answer", 201, batch_answer)] * 10)
    client.MAX_BATCH_BYTES = 1000
    assert [j.id for j in client.enqueue_many(jobs)] == list(range(1, 11))
    assert [len(r[3]) for r in fake.requests] == [2] * 5
    assert max(fake.sizes) <= 1000
    assert [j["payload"]["id"] for r in fake.requests for j in r[3]] == list(range(1, 11))
    # Over the control socket too (its request line wraps the array).
    ctl, fake_ctl = control(*[lambda r: {"ok": True, "data": batch_answer(r["request"]["jobs"])}] * 5)
    ctl.MAX_BATCH_BYTES = 1000
    assert [j.id for j in ctl.enqueue_many(jobs)] == list(range(1, 11))
    assert [len(r["request"]["jobs"]) for r in fake_ctl.requests] == [2] * 5
    # A job larger than the limit goes alone (curfew judges it).
    big, fake_big = http_fake(*[("answer", 201, batch_answer)] * 3)
    big.MAX_BATCH_BYTES = 100
    many = [("k", {"id": 1}), ("k", {"id": 2}), ("k", {"id": 3, "pad": "x" * 200}), ("k", {"id": 4})]
    assert [j.id for j in big.enqueue_many(many)] == [1, 2, 3, 4]
    assert [len(r[3]) for r in fake_big.requests] == [2, 1, 1]


def test_enqueue_many_closes_a_batch_at_max_batch_jobs(http_fake):
    client, fake = http_fake(*[("answer", 201, batch_answer)] * 4)
    client.MAX_BATCH = 3
    assert [j.id for j in client.enqueue_many([("k", {"id": i}) for i in range(7)])] == list(range(7))
    assert [len(r[3]) for r in fake.requests] == [3, 3, 1]
