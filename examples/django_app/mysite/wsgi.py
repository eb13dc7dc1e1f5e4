"""WSGI entry point: `gunicorn mysite.wsgi --bind fd://3` from examples/django_app."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
