"""Minimal Django settings for the curfew example: no database, no apps."""
import os

DEBUG = os.environ.get("DJANGO_DEBUG", "0").lower() in ("1", "true", "yes")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-insecure-curfew-example-key")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
TEMPLATES = []
USE_TZ = True

# curfew sits in front as a reverse proxy and sets X-Forwarded-* headers.
USE_X_FORWARDED_HOST = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
