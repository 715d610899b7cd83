"""The admin checks what the API checks: staff who may only view run no action that
changes things, the add forms refuse what the API refuses, and a save writes only what
its form changed (found by a review of the console, each a failing test first)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from accounts.services import api_key_create
from tests.conftest import bearer_client
from tests.factories import CallFactory, PhoneNumberFactory
from tests.phone import inbound_trunk

pytestmark = pytest.mark.django_db


def staff_with(*perms: str) -> Client:
    """An active staff login holding only these permissions ("app.codename")."""
    user = User.objects.create_user("viewer", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", None)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_view_only_staff_cannot_revoke_api_keys(organization) -> None:
    key, _plaintext = api_key_create(name="prod", organization=organization)
    viewer = staff_with("accounts.view_apikey")
    changelist = reverse("admin:accounts_apikey_changelist")
    assert viewer.get(changelist).status_code == 200  # may look at keys

    chosen = {"action": "revoke", "_selected_action": [str(key.pk)], "index": 0, "post": "yes"}
    viewer.post(changelist, chosen)

    key.refresh_from_db()
    # Revoking is a change: a login that may only view keys must not cut a customer off.
    assert key.revoked is False


def test_revoking_api_keys_asks_first_then_revokes(superuser: Client, organization) -> None:
    key, _plaintext = api_key_create(name="prod", organization=organization)
    changelist = reverse("admin:accounts_apikey_changelist")
    chosen = {"action": "revoke", "_selected_action": [str(key.pk)], "index": 0}

    asked = superuser.post(changelist, chosen)
    key.refresh_from_db()
    assert (asked.status_code, key.revoked) == (200, False)
    assert "Revoke these keys?" in asked.content.decode()

    assert superuser.post(changelist, {**chosen, "post": "yes"}).status_code == 302
    key.refresh_from_db()
    assert key.revoked is True


def test_a_customers_key_cannot_be_turned_into_a_platform_agent_key_in_the_admin(
    superuser: Client, organization, outsider
) -> None:
    """Its plaintext, held by the customer, then read any organization's agent session
    (their provider keys decrypted)."""
    key, plaintext = api_key_create(name="prod", organization=organization)
    foreign = CallFactory(organization=outsider)

    superuser.post(
        reverse("admin:accounts_apikey_change", args=[key.pk]),
        {"name": "prod", "kind": "agent", "organization": ""},
    )

    key.refresh_from_db()
    assert (key.kind, key.organization_id) == ("client", organization.pk)
    session = bearer_client(plaintext).get(f"/api/v1/agent/calls/{foreign.pk}/session")
    assert session.status_code == 403


def test_view_only_staff_cannot_verify_phone_numbers(organization, fake_livekit) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))
    viewer = staff_with("telephony.view_phonenumber")
    changelist = reverse("admin:telephony_phonenumber_changelist")
    assert viewer.get(changelist).status_code == 200  # may look at numbers

    viewer.post(changelist, {"action": "verify", "_selected_action": [str(number.pk)], "index": 0})

    number.refresh_from_db()
    # Verifying creates a live LiveKit dispatch rule (the number starts taking calls):
    # a view-only login must not be able to do it.
    assert number.status == "unverified"
    assert fake_livekit.calls("CreateSIPDispatchRule") == []


def trunk_form(organization, numbers: str) -> dict:
    return {
        "organization": organization.pk,
        "name": "Telnyx",
        "direction": "outbound",
        "address": "sip.telnyx.com",
        "numbers": numbers,
        "auth_username": "acme",
        "auth_password": "trunk-secret-1",
    }


@pytest.mark.parametrize(
    "numbers",
    [
        '"+14155550100"',  # a string, not a list: stored as ["+", "1", "4", ...]
        '["not a number"]',
        '["+14155550100", "+14155550100"]',
        "5",
        '[["+14155550100"]]',
    ],
)
def test_the_trunk_add_form_refuses_numbers_the_api_refuses(
    superuser, organization, fake_livekit, numbers
) -> None:
    from telephony.models import SipTrunk

    response = superuser.post(
        reverse("admin:telephony_siptrunk_add"), trunk_form(organization, numbers)
    )

    # A form error, as POST /sip-trunks answers 400; nothing made in LiveKit or stored.
    assert response.status_code == 200
    assert SipTrunk.objects.count() == 0
    assert fake_livekit.calls("CreateSIPOutboundTrunk") == []


def test_the_trunk_add_form_refuses_an_outbound_trunk_without_an_address(
    superuser, organization, fake_livekit
) -> None:
    from telephony.models import SipTrunk

    form = {**trunk_form(organization, '["+14155550100"]'), "address": ""}

    response = superuser.post(reverse("admin:telephony_siptrunk_add"), form)

    # POST /sip-trunks: "An outbound trunk needs its carrier's SIP address." (400).
    assert response.status_code == 200
    assert SipTrunk.objects.count() == 0
    assert fake_livekit.calls("CreateSIPOutboundTrunk") == []


@pytest.mark.parametrize(
    "changes",
    [
        {"unit_price_usd": "-0.5"},  # a negative price: calls would earn the customer money
        {"provider": "Open AI"},  # never a provider name usage reports: silently unused
        {"model": "gpt 4o"},
    ],
)
def test_the_price_override_form_refuses_what_the_prices_api_refuses(
    superuser, organization, changes
) -> None:
    from billing.models import PriceOverride

    form = {
        "organization": organization.pk,
        "component": "llm_prompt",
        "provider": "openai",
        "model": "gpt-4o",
        "unit_price_usd": "0.0000004",
        **changes,
    }

    response = superuser.post(reverse("admin:billing_priceoverride_add"), form)

    assert response.status_code == 200, "saved what POST /prices/overrides answers 400 to"
    assert PriceOverride.objects.count() == 0


def test_saving_an_organization_in_the_admin_keeps_the_open_call_counter(
    superuser, organization
) -> None:
    """The admin reads the organization, validates the form, then saves every column,
    `open_calls` included. A call created meanwhile (its reservation commits between
    the admin's read and its write; here run at that moment by a pre_save hook) is
    wiped from the counter, which then lets one call too many through the limit (or,
    taken the other way by an end, refuses one for nothing) until a reconcile."""
    from django.db.models.signals import pre_save

    from accounts.models import Organization
    from calls.limits import open_call_reserve

    def concurrent_create(sender, instance, **kwargs) -> None:
        pre_save.disconnect(concurrent_create, sender=Organization)
        open_call_reserve(organization=instance)  # another request's create, committed

    pre_save.connect(concurrent_create, sender=Organization)
    url = reverse("admin:accounts_organization_change", args=[organization.pk])
    form = {
        "slug": organization.slug,
        "name": organization.name,
        "concurrency_limit": 5,
        "allowed_destination_countries": "[]",
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
    }
    try:
        response = superuser.post(url, form)
    finally:
        pre_save.disconnect(concurrent_create, sender=Organization)

    assert response.status_code == 302
    organization.refresh_from_db()
    assert organization.concurrency_limit == 5
    assert organization.open_calls == 1  # the call created meanwhile is still counted


def test_the_trunk_add_form_says_why_a_number_is_refused(
    superuser, organization, fake_livekit
) -> None:
    """The API's errors for a list are by item ({0: [...]}): the form showed "0"."""
    response = superuser.post(
        reverse("admin:telephony_siptrunk_add"), trunk_form(organization, '["+1415555010x"]')
    )

    errors = response.context["adminform"].form.errors["numbers"]
    assert errors and all(error != "0" for error in errors), errors
    assert any("number" in error.lower() for error in errors), errors


@pytest.mark.parametrize(
    "query",
    [
        "calls/call/?started_at__year=9999&started_at__month=12&started_at__day=31",
        "calls/call/?started_at__year=9999&started_at__month=12",
        "calls/call/?created_at__year=99999",
        "auth/user/?date_joined__year=99999",
    ],
)
def test_a_date_no_datetime_holds_in_a_list_url_is_a_bad_filter_not_a_500(
    superuser, organization, query
) -> None:
    """Django's date hierarchy computes the next day, month or year of the one asked for
    (an OverflowError past 9999), and a year lookup builds the year's bounds."""
    CallFactory(organization=organization)

    response = superuser.get(f"/admin/{query}")

    assert (response.status_code, response.url) == (302, f"/admin/{query.split('?')[0]}?e=1")


def test_a_key_created_in_the_admin_is_shown_once_and_never_carried_in_a_cookie(
    superuser: Client, organization
) -> None:
    """The admin shows a new key's plaintext in a message; Django's default message
    storage keeps it in a cookie (signed, not encrypted) until shown."""
    from accounts.models import APIKey

    response = superuser.post(
        reverse("admin:accounts_apikey_add"),
        {"name": "from-admin", "kind": "client", "organization": organization.pk},
    )

    assert response.status_code == 302
    key = APIKey.objects.get(name="from-admin")
    shown = superuser.get(response["Location"])
    import re

    found = set(re.findall(rf"{key.prefix}\.[A-Za-z0-9]{{32}}", shown.content.decode()))
    assert len(found) == 1
    plaintext = found.pop()
    assert key.is_valid(plaintext)
    # Compressed, a cookie does not show it as such, and anyone holding it decodes it.
    assert "messages" not in response.cookies
