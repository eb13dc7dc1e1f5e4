"""The example's background jobs (imported by urls.py, so registered at start)."""
import curfew


@curfew.job("send_email")
def send_email(payload, job):
    print(f"sending email to {payload.get('to')} (job {job.id}, attempt {job.attempt})", flush=True)


@curfew.job("fail")
def fail(payload):
    raise RuntimeError("failing on purpose")
