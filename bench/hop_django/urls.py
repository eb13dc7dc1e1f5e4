from django.urls import path

from . import views

urlpatterns = [
    path("items", views.items),
    path("health", views.health),
]
