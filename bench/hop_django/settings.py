"""Settings of the bench's tiny Django project (production-like: DEBUG off)."""
import os

SECRET_KEY = "hop-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["hop_django"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "hop_django.urls"
WSGI_APPLICATION = "hop_django.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("HOP_DJANGO_DB", "/tmp/hop_django.sqlite3"),
        # keep the connection open between requests, as a tuned deployment would
        "CONN_MAX_AGE": None,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING_CONFIG = None
