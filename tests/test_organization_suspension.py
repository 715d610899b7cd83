"""Staff suspend an organization (fraud, toll fraud, non-payment) from the admin, with a
reason kept for staff: its client keys are refused, no new call of it starts, and the
calls already in progress finish with their transcripts; reinstating restores it all
(README "Suspending an organization")."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import Organization
from accounts.services import organization_reinstate, organization_suspend
from calls.models import Call
from streams.services import stream_lease_open, stream_leases_renew
from telephony.services import phone_number_verify
from tests.factories import CallFactory, PhoneNumberFactory
from tests.phone import CALLEE, CALLS, INBOUND_NUMBER, inbound_trunk, phone_ready, run_dial_worker
from tests.test_admin_checks import staff_with
from tests.test_agent_events_api import transcript
from tests.test_inbound_calls import CALLER, agent_asks
from tests.transfer import with_transfer_tool
from workflows.demo import DEMO_DEFINITION
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db

SUSPENDED = {
    "type": "client_error",
    "errors": [
        {
            "code": "organization_suspended",
            "detail": "Your organization is suspended; contact support.",
            "attr": None,
        }
    ],
}
CHANGELIST = reverse("admin:accounts_organization_changelist")


@pytest.fixture
def superuser() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", None)
    client = Client()
    client.force_login(user)
    return client


def suspended(organization: Organization, reason: str = "toll fraud") -> Organization:
    assert organization_suspend(organization=organization, reason=reason)
    organization.refresh_from_db()
    return organization


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/calls"),
        ("post", "/api/v1/calls"),
        ("get", "/api/v1/organization"),
        ("get", "/api/v1/workflows"),
        ("get", "/api/v1/calls/7d3f3a0e-1b7c-4a57-9d0e-0d6f1b2c3a4e/stream"),
    ],
)
def test_every_request_with_a_suspended_organizations_client_key_is_403_organization_suspended(
    api: APIClient, organization, workflow, method: str, path: str
) -> None:
    suspended(organization)

    response = getattr(api, method)(path, {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 403
    assert response.json() == SUSPENDED
    assert Call.objects.count() == 0


def test_a_suspended_organization_is_refused_on_the_key_read_alone(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    """The suspension is read with the key (one statement, as on every request)."""
    suspended(organization)

    with django_assert_num_queries(1):
        assert api.get("/api/v1/calls").status_code == 403


def test_other_organizations_go_on(outsider_api: APIClient, organization, outsider) -> None:
    suspended(organization)

    assert outsider_api.get("/api/v1/calls").status_code == 200


def test_reinstating_restores_the_keys_and_nothing_was_deleted(
    api: APIClient, organization, workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    suspended(organization)

    assert organization_reinstate(organization=organization)

    assert api.get(f"/api/v1/calls/{call.pk}").status_code == 200
    organization.refresh_from_db()
    assert (organization.suspended_at, organization.suspension_reason) == (None, "")


def test_the_agent_still_records_the_transcript_of_a_call_already_in_progress(
    agent_api: APIClient, org_agent_api: APIClient, organization, workflow
) -> None:
    """Never lose a transcript line: the platform's agents and the customer's own."""
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    suspended(organization)

    for n, client in enumerate([agent_api, org_agent_api]):
        url = f"/api/v1/agent/calls/{call.pk}/events"
        assert client.post(url, {"events": [transcript(n)]}, format="json").status_code == 200
        session = client.get(f"/api/v1/agent/calls/{call.pk}/session")
        assert session.status_code == 200

    assert call.transcript.count() == 2


# --- no new call starts -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # sip_fake's sink closes the connection after a webhook
def test_a_caller_of_a_suspended_organizations_number_is_answered_as_of_a_number_not_ours(
    agent_api: APIClient, organization, workflow, sip_fake
) -> None:
    """Its number's rule stays in LiveKit (nothing is deleted): neither the webhook nor
    the agent, told `unknown_number`, which hangs up, opens a call on its provider keys."""
    trunk = inbound_trunk(organization)
    phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    suspended(organization)

    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    response = agent_asks(agent_api, room, identity)

    assert sip_fake.webhook_answers == [200]
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "unknown_number"
    assert Call.objects.count() == 0

    organization_reinstate(organization=organization)
    room, identity = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    assert agent_asks(agent_api, room, identity).status_code == 200
    assert Call.objects.get().status == "active"


@pytest.mark.django_db(transaction=True)
def test_a_queued_phone_call_of_an_organization_suspended_since_is_never_dialed(
    api: APIClient, organization, workflow, sip_fake
) -> None:
    phone_ready(organization)
    body = {"workflow_slug": "daily-call", "phone_number": CALLEE}
    call_id = api.post(CALLS, body, format="json").json()["call_id"]
    suspended(organization)

    run_dial_worker()

    assert sip_fake.calls("CreateDispatch") == []
    assert sip_fake.calls("CreateSIPParticipant") == []
    call = Call.objects.get(pk=call_id)
    assert (call.status, call.end_reason) == ("failed", "organization_suspended")
    organization.refresh_from_db()
    assert organization.open_calls == 0


@pytest.mark.django_db(transaction=True)
def test_the_agent_cannot_transfer_a_suspended_organizations_call_which_goes_on(
    agent_api: APIClient, organization, sip_fake
) -> None:
    """A transfer dials a new leg on the organization's carrier: the toll fraud a
    suspension stops."""
    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["US"])
    organization.refresh_from_db()
    desk = "+14155550188"
    support = workflow_create(
        organization=organization,
        slug="support",
        name="Support",
        definition=with_transfer_tool(DEMO_DEFINITION, [desk]),
    )
    trunk = inbound_trunk(organization)
    phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=support))
    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    suspended(organization)

    call = Call.objects.get(room_name=room)
    body = {"tool": "hand_to_person", "destination": desk}
    response = agent_api.post(f"/api/v1/agent/calls/{call.pk}/transfer", body, format="json")

    assert response.status_code == 403
    assert response.json() == SUSPENDED
    assert sip_fake.calls("TransferSIPParticipant") == []
    call.refresh_from_db()
    assert call.status == "active"


def test_a_suspended_organizations_open_streams_close_as_a_revoked_keys_do(
    organization, client_key: str, workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    key = organization.api_keys.get()
    lease = stream_lease_open(organization=organization, api_key_id=key.pk, call_id=call.pk)
    assert stream_leases_renew(lease_ids=[lease.pk]) == set()

    suspended(organization)

    assert stream_leases_renew(lease_ids=[lease.pk]) == {lease.pk}


# --- the admin ------------------------------------------------------------------------


def test_staff_suspend_from_the_admin_with_a_reason_and_the_admin_log_keeps_it(
    superuser: Client, organization
) -> None:
    chosen = {"action": "suspend", "_selected_action": [str(organization.pk)], "index": 0}

    asked = superuser.post(CHANGELIST, chosen)
    assert asked.status_code == 200
    assert 'name="reason"' in asked.content.decode()
    # Confirmed without a reason: asked again, nothing done.
    assert superuser.post(CHANGELIST, {**chosen, "post": "yes", "reason": " "}).status_code == 200
    organization.refresh_from_db()
    assert organization.suspended_at is None

    done = superuser.post(CHANGELIST, {**chosen, "post": "yes", "reason": "toll fraud to +882"})

    assert done.status_code == 302
    organization.refresh_from_db()
    assert organization.suspended_at is not None
    assert organization.suspension_reason == "toll fraud to +882"
    entry = LogEntry.objects.get(object_id=str(organization.pk))
    assert (entry.action_flag, entry.change_message) == (CHANGE, "Suspended: toll fraud to +882")
    change = superuser.get(reverse("admin:accounts_organization_change", args=[organization.pk]))
    assert "toll fraud to +882" in change.content.decode()


def test_a_reason_holding_a_nul_suspends_with_the_nul_replaced_not_a_500(
    superuser: Client, organization
) -> None:
    """The reason is the page's textarea as posted, which no form field checks:
    PostgreSQL refuses a NUL in a text column (DataError), in the organization's row
    and in the admin log's entry alike."""
    chosen = {"action": "suspend", "_selected_action": [str(organization.pk)], "index": 0}

    done = superuser.post(CHANGELIST, {**chosen, "post": "yes", "reason": "toll\x00 fraud"})

    assert done.status_code == 302
    organization.refresh_from_db()
    assert organization.suspended_at is not None
    assert organization.suspension_reason == "toll\ufffd fraud"
    entry = LogEntry.objects.get(object_id=str(organization.pk))
    assert entry.change_message == "Suspended: toll\ufffd fraud"


def test_the_organization_list_filters_the_suspended_ones(
    superuser: Client, organization, outsider
) -> None:
    suspended(organization)

    listed = superuser.get(CHANGELIST, {"suspended_at__isempty": "0"})

    assert [o.slug for o in listed.context["cl"].result_list] == ["acme"]


def test_staff_reinstate_from_the_admin_and_the_admin_log_keeps_it(
    superuser: Client, organization
) -> None:
    suspended(organization)
    chosen = {"action": "reinstate", "_selected_action": [str(organization.pk)], "index": 0}

    assert superuser.post(CHANGELIST, chosen).status_code == 302

    organization.refresh_from_db()
    assert organization.suspended_at is None
    entry = LogEntry.objects.get(object_id=str(organization.pk))
    assert entry.change_message == "Reinstated."


def test_suspending_keeps_the_open_call_counter_moved_meanwhile(
    superuser: Client, organization
) -> None:
    """A conditional UPDATE of its own columns: not a save of the row as the page read it."""
    Organization.objects.filter(pk=organization.pk).update(open_calls=3)
    chosen = {"action": "suspend", "_selected_action": [str(organization.pk)], "index": 0}

    superuser.post(CHANGELIST, {**chosen, "post": "yes", "reason": "non-payment"})

    organization.refresh_from_db()
    assert (organization.open_calls, organization.suspension_reason) == (3, "non-payment")


@pytest.mark.parametrize("action", ["suspend", "reinstate"])
def test_staff_who_may_only_view_organizations_can_neither_suspend_nor_reinstate(
    organization, action: str
) -> None:
    viewer = staff_with("accounts.view_organization")
    was = organization.suspended_at if action == "suspend" else suspended(organization).suspended_at
    chosen = {"action": action, "_selected_action": [str(organization.pk)], "index": 0}

    viewer.post(CHANGELIST, {**chosen, "post": "yes", "reason": "fraud"})

    organization.refresh_from_db()
    assert organization.suspended_at == was
    assert not LogEntry.objects.exists()
