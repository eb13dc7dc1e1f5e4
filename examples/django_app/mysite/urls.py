import json
import os
import time

import curfew.django
from django.db import connection, transaction
from django.http import HttpResponse, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from . import jobs  # noqa: F401  (registers the @curfew.job handlers)


def index(request):
    return JsonResponse(
        {
            "ok": True,
            "worker": os.environ.get("CURFEW_WORKER_ID"),
            "pid": os.getpid(),
            "version": os.environ.get("APP_VERSION", "1"),
            "is_secure": request.is_secure(),
            "host": request.get_host(),
            "remote_addr": request.META.get("REMOTE_ADDR"),
            "x_forwarded_for": request.META.get("HTTP_X_FORWARDED_FOR"),
        }
    )


def health(request):
    return JsonResponse({"status": "ok"})


def sleep(request):
    ms = int(request.GET.get("ms", "0"))
    time.sleep(ms / 1000)
    return JsonResponse({"slept_ms": ms})


def plain(request):
    return HttpResponse("hello", content_type="text/plain; charset=utf-8")


@csrf_exempt
def signup(request):
    """Stores the sign-up and its welcome email in one transaction:
    `curl -XPOST :8000/signup -d '{"email": "a@b.c"}'`. On SQLite the job
    is sent to curfew when the transaction commits (on PostgreSQL with
    curfew's store in the same database, inserted inside it)."""
    email = json.loads(request.body)["email"]
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS signup (email text)")
            cur.execute("INSERT INTO signup (email) VALUES (%s)", [email])
        curfew.django.enqueue("send_email", {"to": email})
    return JsonResponse({"ok": True})


urlpatterns = [
    path("", index),
    path("health", health),
    path("sleep", sleep),
    path("plain", plain),
    path("signup", signup),
    # curfew's job deliveries: POST /jobs/<kind> runs the @curfew.job handlers.
    path("jobs/", include("curfew.django.urls")),
]
