"""The delivery rules, without curfew: token, kind, payload, verdicts."""

import asyncio
import datetime as dt

import pytest

import curfew
from curfew._client import job_request

TOKEN = "s3cret"


@pytest.fixture()
def reg(monkeypatch):
    monkeypatch.setenv("CURFEW_JOB_TOKEN", TOKEN)
    r = curfew.Registry()
    seen = []

    @r.job("ok")
    def ok(payload):
        seen.append((payload, curfew.current_job()))

    @r.job("info")
    async def info(payload, job):
        seen.append((payload, job))

    @r.job("later")
    def later(payload):
        raise curfew.Retry(after=dt.timedelta(seconds=2.2), reason="busy")

    @r.job("soon")
    def soon(payload):
        raise curfew.Retry()

    @r.job
    def boom(payload):
        raise KeyError("to")

    r.seen = seen
    return r


def headers(kind="ok", token=TOKEN):
    return {
        "x-curfew-job-token": token,
        "x-job-id": "7",
        "x-job-attempt": "2",
        "x-job-max-attempts": "20",
        "x-job-kind": kind,
        "x-job-queue": "default",
    }


def test_done(reg):
    status, _, _ = reg.handle("ok", headers(), b'{"to": "a"}')
    assert status == 200
    payload, info = reg.seen[0]
    assert payload == {"to": "a"}
    assert info == curfew.JobInfo(id=7, attempt=2, max_attempts=20, kind="ok", queue="default")
    assert curfew.current_job() is None


def test_async_handler_in_a_sync_server_gets_the_job(reg):
    assert reg.handle("info", headers("info"), b"[1]")[0] == 200
    assert reg.seen == [([1], curfew.JobInfo(7, 2, 20, "info", "default"))]


def test_sync_handler_in_an_async_server(reg):
    status, _, _ = asyncio.run(reg.handle_async("ok", headers(), b""))
    assert status == 200
    assert reg.seen[0][0] is None
    assert reg.seen[0][1].id == 7  # the context reaches the worker thread


def test_retry_is_429_with_whole_seconds(reg):
    status, hdrs, body = reg.handle("later", headers("later"), b"{}")
    assert status == 429
    assert ("retry-after", "3") in hdrs
    assert body == b"busy"
    status, hdrs, _ = reg.handle("soon", headers("soon"), b"{}")
    assert status == 429
    assert not [h for h in hdrs if h[0] == "retry-after"]  # curfew's default, 10 s


def test_exception_is_500_with_its_message(reg):
    status, _, body = reg.handle("boom", headers("boom"), b"{}")
    assert status == 500
    assert body == b"KeyError: 'to'"


@pytest.mark.parametrize("token", ["", "wrong", TOKEN + "x"])
def test_wrong_token_is_403_and_runs_nothing(reg, token):
    assert reg.handle("ok", headers(token=token), b"{}")[0] == 403
    assert reg.seen == []


def test_no_token_configured_is_403(reg, monkeypatch):
    monkeypatch.delenv("CURFEW_JOB_TOKEN")
    status, _, body = reg.handle("ok", headers(), b"{}")
    assert status == 403
    assert b"CURFEW_JOB_TOKEN" in body


def test_unknown_kind_and_bad_json(reg):
    status, _, body = reg.handle("nope", headers("nope"), b"{}")
    assert status == 404 and b"'nope'" in body and b"boom" in body
    assert reg.handle("ok", headers(), b"{nope")[0] == 400


def test_kind_from_the_path_when_no_header(reg):
    h = headers()
    del h["x-job-kind"]
    assert reg.handle("ok", h, b"{}")[0] == 200


def test_registering_a_kind_twice_fails():
    r = curfew.Registry()
    r.job("a")(lambda p: None)
    with pytest.raises(ValueError, match="'a'"):
        r.job("a")(lambda p: None)


def test_retry_arguments():
    assert curfew.Retry(after=1.5).after == 1.5
    assert curfew.Retry().after is None
    with pytest.raises(ValueError):
        curfew.Retry(after=-1)
    with pytest.raises(TypeError):
        curfew.Retry(after="soon")


def test_job_request_checks_before_sending():
    assert job_request("k") == {"kind": "k"}
    assert job_request("k", {"a": 1}, queue="q", delay=dt.timedelta(seconds=90), priority=-1, max_attempts=3, idempotency_key="x") == {
        "kind": "k",
        "queue": "q",
        "payload": {"a": 1},
        "delay_s": 90.0,
        "priority": -1,
        "max_attempts": 3,
        "idempotency_key": "x",
    }
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert job_request("k", run_at=when)["run_at"].startswith("2030-01-02T")
    with pytest.raises(ValueError, match="not both"):
        job_request("k", run_at=when, delay=1)
    with pytest.raises(ValueError):
        job_request("")
    with pytest.raises(ValueError):
        job_request("k", delay=-1)
    with pytest.raises(ValueError):
        job_request("k", idempotency_key="")


def test_not_configured(monkeypatch):
    monkeypatch.delenv("CURFEW_ADMIN_URL", raising=False)
    monkeypatch.delenv("CURFEW_CONTROL_SOCKET", raising=False)
    with pytest.raises(curfew.NotConfigured, match="CURFEW_ADMIN_URL"):
        curfew.Client().enqueue("k")
    with pytest.raises(curfew.NotConfigured, match="unsupported"):
        curfew.Client("ftp://x").enqueue("k")


def test_unreachable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(curfew.Unreachable, match=str(port)):
        curfew.Client(f"http://127.0.0.1:{port}").enqueue("k")
    with pytest.raises(curfew.Unreachable):
        curfew.Client("unix:/nonexistent/admin.sock").enqueue("k")
    with pytest.raises(curfew.Unreachable):
        curfew.Client("control:/nonexistent/control.sock").enqueue("k")
