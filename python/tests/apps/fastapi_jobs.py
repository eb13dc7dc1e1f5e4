import curfew.asgi
from fastapi import FastAPI

import handlers  # noqa: F401  (registers the jobs)

app = FastAPI()
app.mount("/jobs", curfew.asgi.jobs_app())


@app.get("/health")
async def health():
    return {"status": "ok"}
