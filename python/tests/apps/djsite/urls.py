from django.http import JsonResponse
from django.urls import include, path

import handlers  # noqa: F401  (registers the jobs)


def health(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("health", health),
    path("jobs/", include("curfew.django.urls")),
]
