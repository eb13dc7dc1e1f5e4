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


def test_retry_after_is_finite_and_capped_at_an_hour(reg):
    # curfew snoozes at most an hour (verdict.rs MAX_SNOOZE): inf is that.
    assert curfew.Retry(after=float("inf")).after == 3600.0
    assert curfew.Retry(after=dt.timedelta(days=2)).after == 3600.0
    with pytest.raises(ValueError):
        curfew.Retry(after=float("nan"))

    @reg.job("forever")
    def forever(payload):
        raise curfew.Retry(after=float("inf"))

    status, hdrs, _ = reg.handle("forever", headers("forever"), b"{}")
    assert status == 429 and ("retry-after", "3600") in hdrs
    status, hdrs, _ = asyncio.run(reg.handle_async("forever", headers("forever"), b"{}"))
    assert status == 429 and ("retry-after", "3600") in hdrs


def test_delay_must_be_finite():
    for bad in (float("inf"), float("nan"), 1e11, dt.timedelta.max):
        with pytest.raises(ValueError, match="delay"):
            job_request("k", delay=bad)
    assert job_request("k", delay=1e10)["delay_s"] == 1e10


def test_find_binary_looks_in_the_user_scripts_dir_on_3_9(tmp_path, monkeypatch):
    import os
    import sys
    import sysconfig

    user = tmp_path / "user-bin"
    user.mkdir()
    exe = user / "curfew"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    real_get_path = sysconfig.get_path

    def get_path(name, scheme=None, *a, **k):
        if name == "scripts" and scheme == f"{os.name}_user":
            return str(user)
        if name == "scripts":
            return str(tmp_path / "no-such-dir")
        return real_get_path(name, scheme, *a, **k) if scheme else real_get_path(name, *a, **k)

    monkeypatch.setattr(sysconfig, "get_path", get_path)
    monkeypatch.setattr(sys, "version_info", (3, 9, 18, "final", 0))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert curfew.find_binary() == str(exe)


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


def _sync_wrapper(f):
    """A sync decorator (tracing, metrics) around an async handler: it
    returns the coroutine."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


@pytest.fixture()
def async_behind_sync(monkeypatch):
    import threading

    monkeypatch.setenv("CURFEW_JOB_TOKEN", TOKEN)
    r = curfew.Registry()
    seen = []

    @r.job("wrapped")
    @_sync_wrapper
    async def wrapped(payload):
        await asyncio.sleep(0)
        seen.append((payload, curfew.current_job().id, threading.get_ident()))
        if payload == "retry":
            raise curfew.Retry(after=5)
        if payload == "boom":
            raise KeyError("to")

    class Handler:
        async def __call__(self, payload, job):
            await asyncio.sleep(0)
            seen.append((payload, job.id, threading.get_ident()))

    r.job("callable")(Handler())
    r.seen = seen
    return r


def test_async_behind_a_sync_wrapper_is_awaited_in_a_sync_server(async_behind_sync):
    r = async_behind_sync
    assert r.handle("wrapped", headers("wrapped"), b'"a"')[0] == 200
    assert [s[:2] for s in r.seen] == [("a", 7)]
    # Its outcome is the verdict: not a success reported without running.
    status, hdrs, _ = r.handle("wrapped", headers("wrapped"), b'"retry"')
    assert status == 429 and ("retry-after", "5") in hdrs
    status, _, body = r.handle("wrapped", headers("wrapped"), b'"boom"')
    assert (status, body) == (500, b"KeyError: 'to'")


def test_async_behind_a_sync_wrapper_is_awaited_on_the_loop(async_behind_sync):
    import threading

    r = async_behind_sync

    async def deliver(body):
        return await r.handle_async("wrapped", headers("wrapped"), body), threading.get_ident()

    (status, _, _), loop_thread = asyncio.run(deliver(b'"a"'))
    assert status == 200
    # Awaited on the event loop's thread, not thrown away in the executor.
    assert r.seen == [("a", 7, loop_thread)]
    assert asyncio.run(deliver(b'"retry"'))[0][0] == 429
    assert asyncio.run(deliver(b'"boom"'))[0][:3:2] == (500, b"KeyError: 'to'")


def test_an_object_with_async_call_is_an_async_handler(async_behind_sync):
    import threading

    r = async_behind_sync
    assert r._handlers["callable"].is_async
    assert r._handlers["callable"].wants_info
    assert r.handle("callable", headers("callable"), b"1")[0] == 200

    async def deliver():
        return await r.handle_async("callable", headers("callable"), b"2"), threading.get_ident()

    (status, _, _), loop_thread = asyncio.run(deliver())
    assert status == 200
    assert [s[:2] for s in r.seen] == [(1, 7), (2, 7)]
    assert r.seen[1][2] == loop_thread
