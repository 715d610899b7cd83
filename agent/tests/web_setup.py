"""Prepare a fresh web database for the worker's tests, in one process (the web venv's
python, from the repo root): migrate, cache table, the demo workflow per organization,
keys. Prints {"agent_key": ..., "client_keys": {org: key}} as JSON on the last line."""

import io
import json
import os
import sys

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1].strip()


command("migrate", "--noinput", "-v0")
command("createcachetable")
client_keys = {}
for org in sys.argv[1:]:
    command("load_demo", "--org", org)
    client_keys[org] = last_line(command("create_api_key", "c", "--org", org))
agent_key = last_line(command("create_api_key", "w", "--agent"))
print(json.dumps({"agent_key": agent_key, "client_keys": client_keys}))
