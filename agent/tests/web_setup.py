"""Prepare a fresh web database for the worker's tests, in one process (the web venv's
python, from the repo root): migrate, cache table, the demo workflow per organization,
keys, and phone lines. Prints {"agent_key": ..., "client_keys": {org: key}} as JSON on
the last line.

`python web_setup.py ORG... [--phone ORG=NUMBER]... [--concurrency-limit ORG=N]...`:
`--phone` gives ORG outbound calls to the US (an outbound trunk, as staff allow it)
and NUMBER as a verified inbound number reaching its `daily-call` workflow (a LiveKit
dispatch rule, as staff verifying it make one), through the LiveKit at LIVEKIT_URL."""

import argparse
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


def phone_lines(slug: str, inbound_number: str, caller_number: str) -> None:
    from accounts.models import Organization
    from telephony.services import phone_number_create, phone_number_verify, sip_trunk_create

    Organization.objects.filter(slug=slug).update(allowed_destination_countries=["US"])
    organization = Organization.objects.get(slug=slug)
    sip_trunk_create(
        organization=organization,
        name="carrier",
        direction="outbound",
        address="example.pstn.twilio.com",
        numbers=[caller_number],
    )
    trunk = sip_trunk_create(
        organization=organization, name="inbound", direction="inbound", numbers=[inbound_number]
    )
    number = phone_number_create(
        organization=organization,
        number=inbound_number,
        trunk_id=trunk.pk,
        workflow_slug="daily-call",
    )
    phone_number_verify(phone_number=number)


def pairs(values: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in values)


parser = argparse.ArgumentParser()
parser.add_argument("orgs", nargs="+")
parser.add_argument("--phone", action="append", default=[])
parser.add_argument("--concurrency-limit", action="append", default=[])
args = parser.parse_args()

command("migrate", "--noinput", "-v0")
command("createcachetable")
client_keys = {}
for org in args.orgs:
    command("load_demo", "--org", org)
    client_keys[org] = last_line(command("create_api_key", "c", "--org", org))
# Each organization's caller id differs: a number belongs to one organization.
for index, (org, number) in enumerate(pairs(args.phone).items()):
    phone_lines(org, number, caller_number=f"+1415555019{index}")
for org, limit in pairs(args.concurrency_limit).items():
    from accounts.models import Organization

    Organization.objects.filter(slug=org).update(concurrency_limit=int(limit))
agent_key = last_line(command("create_api_key", "w", "--agent"))
print(json.dumps({"agent_key": agent_key, "client_keys": client_keys}))
