import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from voicecalls.middleware import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

application = ChunkedBodyMiddleware(get_wsgi_application())

# Django imports the URLconf (every view, serializer and the schema's extensions) on a
# process's first request; importing it here spares that request ~0.2 s, and with
# gunicorn's preload_app it is imported once, before the workers fork.
get_resolver().urlconf_module  # noqa: B018
