"""The Django view behind :mod:`curfew.django.urls`."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .._jobs import registry


@csrf_exempt  # type: ignore[untyped-decorator]
def run_job(request: HttpRequest, kind: str) -> HttpResponse:
    """Runs one job delivery (the token is checked, not a CSRF cookie)."""
    if request.method != "POST":
        response = HttpResponse("POST only\n", status=405, content_type="text/plain")
        response["Allow"] = "POST"
        return response
    headers = {k.lower(): v for k, v in request.headers.items()}
    status, out_headers, body = registry.handle(kind, headers, request.body)
    response = HttpResponse(body, status=status)
    for name, value in out_headers:
        response[name] = value
    return response
