"""Job handlers shared by the test apps. Each run appends one JSON line to
$TEST_RECORD_DIR/<kind>.jsonl, so the tests see what ran, when and how."""

import functools
import json
import os
import time

import curfew


def record(kind, payload, info, **extra):
    line = {
        "kind": kind,
        "payload": payload,
        "id": info.id if info else None,
        "attempt": info.attempt if info else None,
        "queue": info.queue if info else None,
        "pid": os.getpid(),
        "t": time.time(),
        **extra,
    }
    with open(os.path.join(os.environ["TEST_RECORD_DIR"], f"{kind}.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


def runs(kind):
    try:
        with open(os.path.join(os.environ["TEST_RECORD_DIR"], f"{kind}.jsonl")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


@curfew.job("ok")
def ok(payload):
    record("ok", payload, curfew.current_job())


@curfew.job("async_ok")
async def async_ok(payload, job):
    record("async_ok", payload, job)


@curfew.job("retry")
def retry(payload):
    # Postponed on its first run, done on the next.
    first = not runs("retry")
    record("retry", payload, curfew.current_job())
    if first:
        raise curfew.Retry(after=payload.get("after", 1), reason="not yet")


@curfew.job("boom")
def boom(payload):
    record("boom", payload, curfew.current_job())
    raise ValueError(f"bad address {payload.get('to')}")


@curfew.job("chain")
def chain(payload):
    # Enqueues from inside a worker: the address comes from curfew's env.
    j = curfew.enqueue("ok", {"from": "chain"}, idempotency_key=f"chain-{curfew.current_job().id}")
    record("chain", payload, curfew.current_job(), next_id=j.id, url=curfew.default_client().url)


@curfew.job("mail.send", queue="mail")
def mail_send(payload):
    record("mail.send", payload, curfew.current_job())


def traced(f):
    # A sync decorator around an async handler: it returns the coroutine.
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


@curfew.job("wrapped_async")
@traced
async def wrapped_async(payload):
    record("wrapped_async", payload, curfew.current_job())


class AsyncCallable:
    async def __call__(self, payload, job):
        record("callable_async", payload, job)


curfew.job("callable_async")(AsyncCallable())
