"""A threaded WSGI server for the voicecalls web app, run with the *web* venv's python
from the repo root: `python agent/tests/wsgi_server.py PORT`."""

import os
import sys

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

from django.core.servers.basehttp import run
from django.core.wsgi import get_wsgi_application

run("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), threading=True)
