import os
import time

from django.http import HttpResponse, JsonResponse
from django.urls import path


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


urlpatterns = [
    path("", index),
    path("health", health),
    path("sleep", sleep),
    path("plain", plain),
]
