"""``path("jobs/", include("curfew.django.urls"))``: curfew's job deliveries
(``POST /jobs/<kind>``) run the ``@curfew.job`` handlers."""

from django.urls import path

from .views import run_job

urlpatterns = [
    path("<path:kind>", run_job, name="curfew-job"),
]
