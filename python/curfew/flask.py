"""The job endpoint as a Flask blueprint::

    import curfew, curfew.flask
    from flask import Flask

    app = Flask(__name__)
    app.register_blueprint(curfew.flask.blueprint())   # POST /jobs/<kind>

    @curfew.job("send_email")
    def send_email(payload):
        ...

Handlers run in the request's thread (an ``async def`` handler in an event
loop of its own).
"""

from __future__ import annotations

from typing import Any, Optional

from ._jobs import Registry, registry as _default_registry


def blueprint(registry: Optional[Registry] = None, url_prefix: str = "/jobs", name: str = "curfew_jobs") -> Any:
    """A blueprint serving ``POST <url_prefix>/<kind>`` for ``registry``
    (default: the one ``@curfew.job`` fills)."""
    from flask import Blueprint, request

    reg = registry or _default_registry
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    @bp.post("/<path:kind>")
    def run_job(kind: str) -> Any:
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, out_headers, body = reg.handle(kind, headers, request.get_data())
        return body, status, out_headers

    return bp
