"""The RQ side of bench/jobs_bench.py: the job functions RQ workers import
(stdlib only, so that a forked work horse imports nothing heavy)."""

import time


def noop() -> None:
    return None


def stamp() -> float:
    """The moment the function runs, for the enqueue → handler latency."""
    return time.time()


def block(url: str, key: str, timeout: int) -> None:
    """Holds its worker until the benchmark pushes to `key` (or `timeout` s
    pass): the backlog is enqueued while every worker waits here, then all
    are released at once."""
    import redis

    redis.Redis.from_url(url).blpop([key], timeout=timeout)
