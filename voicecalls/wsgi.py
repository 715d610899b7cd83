import os

from django.core.wsgi import get_wsgi_application

from voicecalls.middleware import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

application = ChunkedBodyMiddleware(get_wsgi_application())
