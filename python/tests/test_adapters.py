"""Each framework adapter (ASGI, Flask, Django) behind a real curfew: the
handler's outcome is the job's verdict."""

import time
import urllib.error
import urllib.request

import pytest


def test_return_is_succeeded(app_curfew):
    c = app_curfew
    job = c.client.enqueue("ok", {"to": "a@b.c"})
    stored = c.wait_job(job.id, lambda j: j["state"] == "succeeded")
    assert stored["attempt"] == 1
    (run,) = [r for r in c.runs("ok") if r["id"] == job.id]
    assert run["attempt"] == 1 and run["queue"] == "default" and run["payload"] == {"to": "a@b.c"}


def test_async_handler(app_curfew):
    c = app_curfew
    job = c.client.enqueue("async_ok", [1, 2])
    c.wait_job(job.id, lambda j: j["state"] == "succeeded")
    assert [r["payload"] for r in c.runs("async_ok") if r["id"] == job.id] == [[1, 2]]


@pytest.mark.parametrize("kind", ["wrapped_async", "callable_async"])
def test_async_behind_a_sync_wrapper_or_async_call_runs(app_curfew, kind):
    # Succeeded means the body ran: not a coroutine dropped unawaited.
    c = app_curfew
    job = c.client.enqueue(kind, {"k": kind})
    c.wait_job(job.id, lambda j: j["state"] == "succeeded")
    assert [r["payload"] for r in c.runs(kind) if r["id"] == job.id] == [{"k": kind}]


def test_retry_postpones_without_spending_an_attempt(app_curfew):
    c = app_curfew
    job = c.client.enqueue("retry", {"after": 1}, max_attempts=1)
    stored = c.wait_job(job.id, lambda j: j["state"] == "succeeded")
    runs = [r for r in c.runs("retry") if r["id"] == job.id]
    assert len(runs) == 2, runs
    # max_attempts = 1 and still a second run: the postponed one was not spent.
    assert [r["attempt"] for r in runs] == [1, 1]
    assert runs[1]["t"] - runs[0]["t"] >= 0.9
    assert stored["attempt"] == 1


def test_exception_is_a_failed_attempt_with_its_message(app_curfew):
    c = app_curfew
    job = c.client.enqueue("boom", {"to": "x@y"}, max_attempts=1)
    stored = c.wait_job(job.id, lambda j: j["state"] == "dead")
    assert stored["last_error"] == "HTTP 500: ValueError: bad address x@y"
    assert len([r for r in c.runs("boom") if r["id"] == job.id]) == 1


def test_unknown_kind_is_a_failed_attempt(app_curfew):
    c = app_curfew
    job = c.client.enqueue("no_such_kind", max_attempts=1)
    stored = c.wait_job(job.id, lambda j: j["state"] == "dead")
    assert stored["last_error"].startswith("HTTP 404: no handler for job kind 'no_such_kind'")


def test_worker_enqueues_through_the_address_curfew_gives_it(app_curfew):
    c = app_curfew
    job = c.client.enqueue("chain", {})
    c.wait_job(job.id, lambda j: j["state"] == "succeeded")
    (run,) = [r for r in c.runs("chain") if r["id"] == job.id]
    assert run["url"] == c.admin_url
    c.wait_job(run["next_id"], lambda j: j["state"] == "succeeded")


def test_clients_cannot_call_the_job_endpoint(app_curfew):
    c = app_curfew
    req = urllib.request.Request(
        f"http://127.0.0.1:{c.port}/jobs/ok",
        data=b"{}",
        headers={"X-Curfew-Job-Token": "guess", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    time.sleep(0.2)
    assert not [r for r in c.runs("ok") if not r["id"]], "a client's request ran a job"
