"""The admin's side of privacy: staff set an organization's retention, read the
erasures' audit log (found by user id through its keyed hash), and cannot replay an
erased call's webhook event."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.services import api_key_create
from calls.models import CallStatus
from privacy.erasure import erasure_create, erasure_run
from privacy.models import Erasure
from tests.privacy import personal_call
from webhooks import outbox, services
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import EventType, WebhookDelivery

pytestmark = pytest.mark.django_db


def organization_form(organization, **changes: object) -> dict:
    return {
        "slug": organization.slug,
        "name": organization.name,
        "allowed_destination_countries": "[]",
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
        "transcript_retention_days": "",
        "recording_retention_days": "",
        "user_data_retention_days": "",
        **changes,
    }


def test_staff_set_an_organizations_retention(admin_client: Client, organization) -> None:
    url = reverse("admin:accounts_organization_change", args=[organization.pk])

    response = admin_client.post(url, organization_form(organization, transcript_retention_days=30))

    assert response.status_code == 302
    organization.refresh_from_db()
    assert (organization.transcript_retention_days, organization.user_data_retention_days) == (
        30,
        None,
    )


@pytest.mark.parametrize("days", ["0", "3651", "-1"])
def test_a_retention_outside_1_to_3650_days_is_refused(admin_client, organization, days):
    url = reverse("admin:accounts_organization_change", args=[organization.pk])

    response = admin_client.post(
        url, organization_form(organization, user_data_retention_days=days)
    )

    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    organization.refresh_from_db()
    assert organization.user_data_retention_days is None


def erasure_of(organization, user_id: str) -> Erasure:
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    erasure = erasure_create(organization=organization, user_id=user_id, api_key=key)
    erasure_run(erasure_id=erasure.pk)
    return erasure


def test_staff_find_a_users_erasures_by_user_id_never_seeing_it(
    admin_client: Client, organization, outsider
) -> None:
    personal_call(organization)
    mine = erasure_of(organization, "user-123")
    other = erasure_of(organization, "user-456")
    url = reverse("admin:privacy_erasure_changelist")

    found = admin_client.get(url, {"q": "user-123"}).content.decode()
    page = admin_client.get(reverse("admin:privacy_erasure_change", args=[mine.pk]))

    assert str(mine.pk) in found and str(other.pk) not in found
    assert page.status_code == 200
    html = page.content.decode()
    assert mine.user_id_hash in html and "user-123" not in html
    assert admin_client.get(reverse("admin:privacy_erasure_add")).status_code == 403


def test_replaying_an_erased_calls_event_is_refused_in_the_admin(
    admin_client: Client, organization
) -> None:
    services.webhook_endpoint_create(
        organization=organization, url="http://127.0.0.1:9/hook", events=[EventType.CALL_ENDED]
    )
    call = personal_call(organization)
    outbox.call_status_changed_record(
        call_id=call.pk,
        from_status=CallStatus.ACTIVE,
        to_status=CallStatus.COMPLETED,
        end_reason="user_hangup",
        at=call.ended_at,
    )
    delivery = WebhookDelivery.objects.get()
    webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    erasure_of(organization, "user-123")

    response = admin_client.post(
        reverse("admin:webhooks_webhookdelivery_changelist"),
        {"action": "replay", "_selected_action": [delivery.pk]},
        follow=True,
    )

    assert "1 delivery(ies) not replayed: their call was erased." in response.content.decode()
    after = WebhookDelivery.objects.get()
    assert (after.status, after.round_attempts, after.next_attempt_at) == (
        delivery.status,
        delivery.round_attempts,
        delivery.next_attempt_at,
    )
