"""Seed a fresh database for API fuzzing and write what the hooks need.

Creates organization `fuzz` (its concurrency limit raised so thousands of generated
calls fit), its client key and a platform agent key, the demo workflow `daily-call`
plus workflows, provider keys, webhook endpoints (a failed delivery each) and calls in
several states (one
with a transcript and metrics), then
writes their keys and ids as JSON to the path given (read by scripts/fuzz/hooks.py).

    python scripts/fuzz/setup.py STATE.json
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicecalls.settings")

import django

django.setup()

from django.utils import timezone  # noqa: E402

from accounts.models import KeyKind, Organization  # noqa: E402
from accounts.services import api_key_create, organization_get_or_create  # noqa: E402
from calls.agent_events import agent_events_record  # noqa: E402
from calls.lifecycle import call_transition  # noqa: E402
from calls.models import Call, CallStatus  # noqa: E402
from calls.services import call_create  # noqa: E402
from providerkeys.services import provider_key_create  # noqa: E402
from telephony.models import PhoneNumber, SipTrunk  # noqa: E402
from webhooks.models import DeliveryStatus, WebhookDelivery  # noqa: E402
from webhooks.services import webhook_endpoint_create, webhook_endpoint_test  # noqa: E402
from workflows.models import Workflow  # noqa: E402
from workflows.selectors import workflow_call_target  # noqa: E402
from workflows.services import workflow_create, workflow_demo_load  # noqa: E402

ORGANIZATION = "fuzz"


def main(state_path: str) -> None:
    organization = organization_get_or_create(slug=ORGANIZATION, name="Fuzz")
    # Phone calls to the US get past the guard (their rate raised like the concurrency);
    # nothing dials them: no `dial` worker runs while fuzzing.
    Organization.objects.filter(pk=organization.pk).update(
        concurrency_limit=1_000_000,
        allowed_destination_countries=["US"],
        max_outbound_calls_per_minute=1_000_000,
        max_outbound_calls_per_day=1_000_000,
    )
    organization.refresh_from_db()
    _, client_key = api_key_create(name="fuzz-client", organization=organization)
    _, agent_key = api_key_create(name="fuzz-agent", kind=KeyKind.AGENT)

    demo, _ = workflow_demo_load(organization=organization)
    # Workflows the fuzzer may edit and delete; calls use `daily-call`, never deleted
    # because its id is not handed out.
    workflows = [
        workflow_create(
            organization=organization,
            slug=f"fuzz-flow-{index}",
            name=f"Fuzz flow {index}",
            definition=demo.current_version.definition,
        )
        for index in range(3)
    ]
    provider_keys = [
        provider_key_create(
            organization=organization,
            provider_type=kind,
            provider_name=name,
            api_key=f"fuzz-{kind}-key-0000",
            is_default=True,
        )
        for kind, name in (("stt", "deepgram"), ("llm", "openai"), ("tts", "cartesia"))
    ]

    webhook_endpoints, webhook_deliveries = _webhooks(organization)
    calls = _calls(organization, demo)
    trunks, phone_numbers = _phone(organization, demo)

    state = {
        "client_key": client_key,
        "agent_key": agent_key,
        "workflow_slugs": [demo.slug],
        "workflow_ids": [str(w.pk) for w in workflows],
        "provider_key_ids": [str(k.pk) for k in provider_keys],
        "call_ids": [str(c.pk) for c in calls],
        "webhook_endpoint_ids": [str(e.pk) for e in webhook_endpoints],
        "webhook_deliveries": [[str(e.pk), d] for e, d in webhook_deliveries],
        "sip_trunk_ids": [str(t.pk) for t in trunks],
        "phone_number_ids": [str(n.pk) for n in phone_numbers],
    }
    Path(state_path).write_text(json.dumps(state, indent=2))


def _webhooks(organization: Organization) -> tuple[list, list]:
    """Two endpoints, and a delivery that ended to each."""
    webhook_endpoints = [
        webhook_endpoint_create(
            organization=organization,
            url=f"https://hooks.example.com/fuzz/{index}",
            events=["call.ended"],
        )[0]
        for index in range(2)
    ]
    # A delivery that ended to each (no worker runs while fuzzing), for replays to reach.
    webhook_deliveries = [(e, webhook_endpoint_test(endpoint=e)) for e in webhook_endpoints]
    WebhookDelivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    return webhook_endpoints, webhook_deliveries


def _calls(organization: Organization, demo: Workflow) -> list[Call]:
    """Six calls of the demo workflow: two connecting, two active (one with a transcript
    and metrics), one completed, one failed."""
    target = workflow_call_target(organization=organization, slug=demo.slug)
    calls = [call_create(organization=organization, target=target).call for _ in range(6)]
    active, talked, completed, failed = calls[1], calls[2], calls[3], calls[4]
    for call in (active, talked):
        call_transition(call_id=call.pk, to_status=CallStatus.ACTIVE)
    now = timezone.now()
    agent_events_record(
        call_id=talked.pk,
        events=[
            {
                "id": uuid.uuid4(),
                "type": "transcript",
                "role": role,
                "content": content,
                "agent_name": "greeter-agent",
                "timestamp": now + datetime.timedelta(seconds=index),
            }
            for index, (role, content) in enumerate(
                [("assistant", "Hello! How are you today?"), ("user", "Fine, thanks.")]
            )
        ]
        + [
            {
                "id": uuid.uuid4(),
                "type": "metrics",
                "stt_latency_ms": 120.0,
                "tokens": 42,
                "timestamp": now,
            }
        ],
    )
    call_transition(call_id=completed.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    call_transition(call_id=failed.pk, to_status=CallStatus.FAILED, end_reason="agent_error")
    return calls


def _phone(organization: Organization, demo: Workflow) -> tuple[list, list]:
    """Three outbound trunks, and an inbound one whose two numbers reach the demo."""
    # Trunks stored directly: the fake LiveKit is not up yet. Deleting one through the
    # API asks LiveKit, which no longer has it (not_found): gone there already, fine.
    trunks = [
        SipTrunk.objects.create(
            organization=organization,
            name=f"Fuzz trunk {index}",
            direction="outbound",
            address="fuzz.pstn.example.com",
            numbers=[f"+1415555010{index}"],
            auth_username="fuzz",
            auth_password="fuzz-trunk-password",
            livekit_trunk_id=f"ST_fuzz{index}",
        )
        for index in range(3)
    ]

    inbound = SipTrunk.objects.create(
        organization=organization,
        name="Fuzz inbound",
        direction="inbound",
        numbers=["+14155550140", "+14155550141"],
        livekit_trunk_id="ST_fuzz_inbound",
    )
    phone_numbers = [
        PhoneNumber.objects.create(
            organization=organization, number=number, trunk=inbound, workflow=demo
        )
        for number in inbound.numbers
    ]
    return trunks, phone_numbers


if __name__ == "__main__":
    main(sys.argv[1])
