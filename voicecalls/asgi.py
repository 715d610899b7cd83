"""The ASGI application: the live call streams' service (gunicorn.streams.conf.py) and
`make run`'s development server. The API's production server stays WSGI
(voicecalls.wsgi, gunicorn.conf.py): see README "Watching a call live"."""

import os

from django.core.asgi import get_asgi_application

from voicecalls.middleware import ASGIBodyLimitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

application = ASGIBodyLimitMiddleware(get_asgi_application())
