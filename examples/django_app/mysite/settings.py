"""Minimal Django settings for the curfew example: no apps, a SQLite
database only for the transactional enqueue in /signup."""
import os
import tempfile

DEBUG = os.environ.get("DJANGO_DEBUG", "0").lower() in ("1", "true", "yes")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-insecure-curfew-example-key")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get(
            "DJANGO_DB", os.path.join(tempfile.gettempdir(), "curfew-django-example.sqlite3")
        ),
    }
}
TEMPLATES = []
USE_TZ = True

# curfew sits in front as a reverse proxy and sets X-Forwarded-* headers.
USE_X_FORWARDED_HOST = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
