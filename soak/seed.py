"""Seed the soak's database: organization `soak`, its client key, an agent key, two
workflows (`soak`, and `soak-short` whose calls reach their maximum duration in 30 s)
and a webhook endpoint at the local receiver; writes the keys and the endpoint's secret
as JSON.

    python -m soak.seed STATE.json RECEIVER_URL
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ORGANIZATION = "soak"
# Longer than LiveKit holds a webhook back (past 30 s): a late join must still start it.
CONNECT_TIMEOUT_SECONDS = 60
SHORT_MAX_DURATION_SECONDS = 30


def main(state_path: str, receiver_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")
    import django

    django.setup()
    from accounts.models import KeyKind
    from accounts.services import api_key_create, organization_get_or_create
    from webhooks.services import webhook_endpoint_create
    from workflows.services import workflow_create, workflow_demo_load

    organization = organization_get_or_create(slug=ORGANIZATION, name="Soak")
    _, client_key = api_key_create(name="soak-client", organization=organization)
    _, agent_key = api_key_create(name="soak-agent", kind=KeyKind.AGENT)
    demo, _ = workflow_demo_load(organization=organization)
    for slug, max_duration in (("soak", 1800), ("soak-short", SHORT_MAX_DURATION_SECONDS)):
        definition = dict(demo.current_version.definition)
        definition["settings"] = {
            "connect_timeout_seconds": CONNECT_TIMEOUT_SECONDS,
            "max_duration_seconds": max_duration,
        }
        workflow_create(organization=organization, slug=slug, name=slug, definition=definition)
    _, secret = webhook_endpoint_create(
        organization=organization,
        url=receiver_url,
        events=["call.status_changed", "call.ended"],
    )
    state = {
        "organization_id": str(organization.pk),
        "client_key": client_key,
        "agent_key": agent_key,
        "webhook_secret": secret,
        "start_agent": demo.current_version.definition["start_agent"],
    }
    Path(state_path).write_text(json.dumps(state, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:3])
