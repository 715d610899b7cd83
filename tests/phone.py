"""The telephony tests' cast: an organization that may call the US from its own
outbound trunk, the fake LiveKit posting its webhooks to the real webhook view, and
the real `dial` worker."""

from __future__ import annotations

from accounts.models import Organization
from telephony.models import SipTrunk
from telephony.services import sip_trunk_create
from tests.tasks import run_task_worker

CALLS = "/api/v1/calls"
CALLER = "+14155550100"
CALLEE = "+14155550123"


def run_dial_worker() -> None:
    """The real task worker on the `dial` queue: runs every job due now, then exits."""
    run_task_worker("dial")


def phone_ready(organization: Organization, *, countries: tuple[str, ...] = ("US",)) -> SipTrunk:
    """Allow `countries` (staff do it in the admin) and add an outbound trunk (through
    the fake LiveKit)."""
    Organization.objects.filter(pk=organization.pk).update(
        allowed_destination_countries=list(countries)
    )
    organization.refresh_from_db()
    return sip_trunk_create(
        organization=organization,
        name="carrier",
        direction="outbound",
        address="example.pstn.twilio.com",
        numbers=[CALLER],
        auth_username="acme",
        auth_password="trunk-secret-pw",
    )


def webhooks_to_our_view(fake_livekit) -> None:
    """Have the fake LiveKit deliver its webhooks to our webhook view as LiveKit would
    (on its own thread, before it answers the dial); `webhook_answers` keeps the view's
    status codes."""
    from tests.livekit_samples import post_webhook

    fake_livekit.webhook_answers = []

    def sink(body: str, authorization: str) -> None:
        from django.db import connection

        try:
            fake_livekit.webhook_answers.append(
                post_webhook(body, authorization=authorization).status_code
            )
        finally:
            connection.close()

    fake_livekit.webhook_sink = sink


INBOUND_NUMBER = "+14155550140"
SECOND_INBOUND_NUMBER = "+14155550141"


def inbound_trunk(
    organization: Organization, numbers: tuple[str, ...] = (INBOUND_NUMBER, SECOND_INBOUND_NUMBER)
) -> SipTrunk:
    """An inbound trunk of the organization (through the fake LiveKit)."""
    return sip_trunk_create(
        organization=organization, name="inbound", direction="inbound", numbers=list(numbers)
    )
