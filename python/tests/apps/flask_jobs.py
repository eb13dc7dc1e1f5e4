import curfew.flask
from flask import Flask

import handlers  # noqa: F401  (registers the jobs)

app = Flask(__name__)
app.register_blueprint(curfew.flask.blueprint())


@app.get("/health")
def health():
    return {"status": "ok"}
