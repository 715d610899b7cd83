"""SIP trunks and the organization's phone ceilings in the admin: the trunk password
is write-only (never in any page), trunks are created and deleted in LiveKit too, and
calls show their phone facts."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts.models import Organization
from telephony.models import PhoneNumber, SipTrunk
from telephony.services import sip_trunk_create
from tests.factories import CallFactory, PhoneNumberFactory
from tests.phone import CALLER, INBOUND_NUMBER, inbound_trunk, phone_ready

pytestmark = pytest.mark.django_db

PASSWORD = "admin-trunk-secret-77"
ADD_URL = reverse("admin:telephony_siptrunk_add")
LIST_URL = reverse("admin:telephony_siptrunk_changelist")


def add_form(organization: Organization, **changes: object) -> dict:
    return {
        "organization": organization.pk,
        "name": "Telnyx",
        "direction": "outbound",
        "address": "sip.telnyx.com",
        "numbers": '["+14155550100"]',
        "auth_username": "acme",
        "auth_password": PASSWORD,
        **changes,
    }


def test_staff_add_a_trunk_through_a_password_field_and_it_is_created_in_livekit(
    staff_client, organization, fake_livekit
) -> None:
    page = staff_client.get(ADD_URL).content.decode()
    assert 'type="password"' in page

    response = staff_client.post(ADD_URL, add_form(organization))

    assert response.status_code == 302
    trunk = SipTrunk.objects.get()
    assert trunk.auth_password == PASSWORD
    (sent,) = fake_livekit.calls("CreateSIPOutboundTrunk")
    assert sent.body["trunk"]["authPassword"] == PASSWORD
    assert trunk.livekit_trunk_id.startswith("ST_")


def test_a_trunk_livekit_refuses_in_the_admin_is_a_form_error_that_never_echoes_the_password(
    staff_client, organization, fake_livekit
) -> None:
    fake_livekit.fail("CreateSIPOutboundTrunk", "500")

    response = staff_client.post(ADD_URL, add_form(organization))

    assert response.status_code == 200
    assert "LiveKit refused the trunk" in response.content.decode()
    assert PASSWORD not in response.content.decode()
    assert SipTrunk.objects.count() == 0


def test_trunk_pages_show_only_the_mask(staff_client, organization, fake_livekit) -> None:
    trunk = phone_ready(organization)
    change = reverse("admin:telephony_siptrunk_change", args=[trunk.pk])
    delete = reverse("admin:telephony_siptrunk_delete", args=[trunk.pk])

    pages = [staff_client.get(url).content.decode() for url in (LIST_URL, change, delete)]

    assert "••••" in pages[1]
    assert all("trunk-secret-pw" not in page for page in pages)


def test_trunk_pages_open_when_no_configured_key_opens_the_password(
    staff_client, organization, fake_livekit, settings
) -> None:
    trunk = phone_ready(organization)
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"
    change = reverse("admin:telephony_siptrunk_change", args=[trunk.pk])
    delete = reverse("admin:telephony_siptrunk_delete", args=[trunk.pk])

    pages = [staff_client.get(url) for url in (LIST_URL, change, delete)]
    deleted = staff_client.post(delete, {"post": "yes"})

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert "••••" in pages[1].content.decode()
    assert deleted.status_code == 302
    assert SipTrunk.objects.count() == 0


def _inbound_trunk_with_password(organization):
    return sip_trunk_create(
        organization=organization,
        name="inbound",
        direction="inbound",
        numbers=[INBOUND_NUMBER],
        auth_username="acme",
        auth_password=PASSWORD,
    )


def test_a_trunks_delete_page_names_the_numbers_keeping_it_when_no_key_opens_its_password(
    staff_client, organization, fake_livekit, settings
) -> None:
    """Django's page reads each number keeping the trunk (PROTECT) with its trunk, every
    column: the password no configured key opens made it a 500, not the numbers to
    remove first."""
    trunk = _inbound_trunk_with_password(organization)
    PhoneNumberFactory(trunk=trunk)
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"

    page = staff_client.get(reverse("admin:telephony_siptrunk_delete", args=[trunk.pk]))

    assert page.status_code == 200
    assert INBOUND_NUMBER in page.content.decode()
    assert SipTrunk.objects.filter(pk=trunk.pk).exists()


def test_deleting_a_trunk_in_the_admin_deletes_it_in_livekit(
    staff_client, organization, fake_livekit
) -> None:
    trunk = phone_ready(organization)
    delete = reverse("admin:telephony_siptrunk_delete", args=[trunk.pk])

    response = staff_client.post(delete, {"post": "yes"})

    assert response.status_code == 302
    assert SipTrunk.objects.count() == 0
    (sent,) = fake_livekit.calls("DeleteSIPTrunk")
    assert sent.body == {"sipTrunkId": trunk.livekit_trunk_id}


def test_staff_set_the_phone_ceilings_on_the_organization_page(staff_client, organization) -> None:
    page = staff_client.get(
        reverse("admin:accounts_organization_change", args=[organization.pk])
    ).content.decode()

    for name in (
        "allowed_destination_countries",
        "max_outbound_calls_per_minute",
        "max_outbound_calls_per_day",
    ):
        assert f'name="{name}"' in page


def test_a_calls_admin_page_shows_its_phone_number_and_sip_status(staff_client, organization):
    call = CallFactory(
        organization=organization,
        channel="phone",
        phone_number="+14155550123",
        from_number="+14155550100",
        status="failed",
        end_reason="busy",
        sip_status_code=486,
        sip_status="Busy Here",
    )

    page = staff_client.get(reverse("admin:calls_call_change", args=[call.pk])).content.decode()

    for text in ("+14155550123", "+14155550100", "486", "Busy Here"):
        assert text in page


@pytest.mark.parametrize(
    ("countries", "saved"),
    [
        ('["US", "CA"]', ["US", "CA"]),
        ('["us"]', None),
        ('["XX"]', None),
        ('"US"', None),
        # Not strings: a TypeError (unhashable), a 500, before the check looked at types.
        ('[["US"]]', None),
        ('[{"US": 1}]', None),
    ],
)
def test_staff_may_allow_only_region_codes_the_guard_knows(
    staff_client, organization, countries: str, saved: list | None
) -> None:
    url = reverse("admin:accounts_organization_change", args=[organization.pk])
    form = {
        "slug": organization.slug,
        "name": organization.name,
        "allowed_destination_countries": countries,
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
    }

    response = staff_client.post(url, form)

    organization.refresh_from_db()
    if saved is None:
        assert response.status_code == 200
        assert "region codes" in response.content.decode()
        assert organization.allowed_destination_countries == []
    else:
        assert response.status_code == 302
        assert organization.allowed_destination_countries == saved


def limits_form(organization: Organization, **changes: object) -> dict:
    return {
        "slug": organization.slug,
        "name": organization.name,
        "allowed_destination_countries": "[]",
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
        **changes,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("outbound_calls_per_minute", 0),
        ("outbound_calls_per_day", 0),
        ("outbound_calls_per_minute", 11),
        ("outbound_calls_per_day", 501),
    ],
)
def test_the_organizations_own_limits_are_refused_as_the_api_refuses_them(
    staff_client, organization, name: str, value: int
) -> None:
    """At least 1 and at most the ceiling: a 0 saved here was read back by the customer
    and refused when sent back; above the ceiling it waited for a raise nobody asked."""
    url = reverse("admin:accounts_organization_change", args=[organization.pk])

    response = staff_client.post(url, limits_form(organization, **{name: value}))

    assert response.status_code == 200  # the form again, with the error
    assert name in response.context["adminform"].form.errors
    organization.refresh_from_db()
    assert getattr(organization, name) is None


def test_staff_lower_a_ceiling_under_the_organizations_own_limit(staff_client, organization):
    Organization.objects.filter(pk=organization.pk).update(outbound_calls_per_minute=8)
    url = reverse("admin:accounts_organization_change", args=[organization.pk])
    form = limits_form(
        organization,
        outbound_calls_per_minute=8,
        **{"initial-outbound_calls_per_minute": 8},
        max_outbound_calls_per_minute=5,
    )

    response = staff_client.post(url, form)

    assert response.status_code == 302
    organization.refresh_from_db()
    assert (organization.max_outbound_calls_per_minute, organization.outbound_calls_per_minute) == (
        5,
        8,
    )


NUMBERS_URL = reverse("admin:telephony_phonenumber_changelist")


def verify_in_admin(staff_client: Client, number: PhoneNumber):
    return staff_client.post(
        NUMBERS_URL, {"action": "verify", "_selected_action": [str(number.pk)]}, follow=True
    )


def test_staff_verifying_a_number_creates_its_dispatch_rule_in_livekit(
    staff_client, organization, fake_livekit, settings
) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))

    response = verify_in_admin(staff_client, number)

    assert response.status_code == 200
    assert f"{INBOUND_NUMBER} verified." in response.content.decode()
    number.refresh_from_db()
    (sent,) = fake_livekit.calls("CreateSIPDispatchRule")
    assert sent.identity_ok
    assert sent.body == {
        "dispatchRule": {
            "rule": {"dispatchRuleIndividual": {"roomPrefix": "inbound-"}},
            "trunkIds": [number.trunk.livekit_trunk_id],
            "numbers": [INBOUND_NUMBER],
            "name": f"voicecalls {INBOUND_NUMBER}",
            "roomConfig": {
                "departureTimeout": settings.LIVEKIT_DEPARTURE_TIMEOUT,
                "agents": [
                    {
                        "agentName": settings.LIVEKIT_AGENT_NAME,
                        "metadata": json.dumps(
                            {"phone_number": INBOUND_NUMBER, "phone_number_id": str(number.pk)}
                        ),
                    }
                ],
            },
        }
    }
    assert number.status == "verified"
    assert number.verified_at is not None
    assert number.livekit_dispatch_rule_id in fake_livekit.dispatch_rules


def test_verifying_a_verified_number_again_creates_no_second_rule(
    staff_client, organization, fake_livekit
) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))
    verify_in_admin(staff_client, number)

    verify_in_admin(staff_client, number)

    assert len(fake_livekit.calls("CreateSIPDispatchRule")) == 1


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_rule_livekit_refuses_leaves_the_number_unverified(
    staff_client, organization, fake_livekit, livekit_gives_up_fast, mode
) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))
    fake_livekit.fail("CreateSIPDispatchRule", mode)

    response = verify_in_admin(staff_client, number)

    assert "LiveKit refused its rule" in response.content.decode()
    number.refresh_from_db()
    assert (number.status, number.livekit_dispatch_rule_id, number.verified_at) == (
        "unverified",
        "",
        None,
    )


def test_a_number_deleted_as_staff_verify_it_is_a_message_not_a_500(
    staff_client, organization, fake_livekit
) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))
    deleted = []

    def delete_before_verify_reads_it(execute, sql, params, many, context):
        # The action's own read of the number (by its pk, one row): deleted just before.
        if not deleted and '"telephony_phonenumber"' in sql and "LIMIT 21" in sql:
            deleted.append(True)
            PhoneNumber.objects.filter(pk=number.pk).delete()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(delete_before_verify_reads_it):
        response = verify_in_admin(staff_client, number)

    assert deleted
    assert response.status_code == 200
    assert the_one_message(response) == f"{INBOUND_NUMBER}: not verified, it was deleted meanwhile."
    assert fake_livekit.calls("CreateSIPDispatchRule") == []


def test_a_numbers_pages_open_when_no_configured_key_opens_its_trunks_password(
    staff_client, organization, fake_livekit, settings
) -> None:
    """The number's page shows its trunk, which Django read whole (every column) to show
    it: the password no configured key opens made the page a 500, as the trunk's own
    pages were."""
    trunk = _inbound_trunk_with_password(organization)
    number = PhoneNumberFactory(trunk=trunk)
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"
    change = reverse("admin:telephony_phonenumber_change", args=[number.pk])
    delete = reverse("admin:telephony_phonenumber_delete", args=[number.pk])

    pages = [staff_client.get(url) for url in (NUMBERS_URL, change, delete)]

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert str(trunk) in pages[1].content.decode()


def test_staff_cannot_add_numbers_customers_do(staff_client) -> None:
    response = staff_client.get(reverse("admin:telephony_phonenumber_add"))

    assert response.status_code == 403


def test_staff_deleting_a_verified_number_deletes_its_rule(
    staff_client, organization, fake_livekit
) -> None:
    number = PhoneNumberFactory(trunk=inbound_trunk(organization))
    verify_in_admin(staff_client, number)

    response = staff_client.post(
        reverse("admin:telephony_phonenumber_delete", args=[number.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert fake_livekit.dispatch_rules == {}
    assert PhoneNumber.objects.count() == 0


def the_one_message(response) -> str:
    (message,) = [str(m) for m in response.context["messages"]]
    return message


def test_deleting_a_trunk_livekit_refuses_keeps_it_with_a_message_not_a_500(
    staff_client, organization, fake_livekit
) -> None:
    trunk = phone_ready(organization)
    fake_livekit.fail("DeleteSIPTrunk", "500")
    staff_client.raise_request_exception = False

    response = staff_client.post(
        reverse("admin:telephony_siptrunk_delete", args=[trunk.pk]), {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert "LiveKit refused its deletion, kept" in the_one_message(response)
    assert SipTrunk.objects.filter(pk=trunk.pk).exists()


def test_a_trunk_given_a_number_as_staff_delete_it_is_kept_with_a_message_not_a_500(
    staff_client, organization, fake_livekit
) -> None:
    """The customer maps a number to the trunk after the delete page looked for numbers
    keeping it: the service refuses the delete (TrunkInUse) holding the trunk's row."""
    trunk = inbound_trunk(organization)
    added = []

    def add_a_number_before_the_delete_locks_the_trunk(execute, sql, params, many, context):
        # The service's own read of the trunk (`.first()`; the page's is a `.get()`).
        if not added and '"telephony_siptrunk"' in sql and "LIMIT 1" in sql:
            added.append(PhoneNumberFactory(trunk=trunk))
        return execute(sql, params, many, context)

    staff_client.raise_request_exception = False
    with connection.execute_wrapper(add_a_number_before_the_delete_locks_the_trunk):
        response = staff_client.post(
            reverse("admin:telephony_siptrunk_delete", args=[trunk.pk]),
            {"post": "yes"},
            follow=True,
        )

    assert added
    assert response.status_code == 200
    assert the_one_message(response) == (
        f"{trunk}: The trunk has phone numbers: delete them first."
    )
    assert SipTrunk.objects.filter(pk=trunk.pk).exists()
    assert fake_livekit.calls("DeleteSIPTrunk") == []


def test_deleting_numbers_in_bulk_keeps_the_one_livekit_refuses_and_says_so(
    staff_client, organization, fake_livekit
) -> None:
    from telephony.services import phone_number_verify

    number = phone_number_verify(phone_number=PhoneNumberFactory(trunk=inbound_trunk(organization)))
    fake_livekit.fail("DeleteSIPDispatchRule", "500")
    staff_client.raise_request_exception = False

    response = staff_client.post(
        reverse("admin:telephony_phonenumber_changelist"),
        {"action": "delete_selected", "_selected_action": [number.pk], "post": "yes"},
        follow=True,
    )

    assert response.status_code == 200
    assert "LiveKit refused its deletion, kept" in the_one_message(response)
    assert PhoneNumber.objects.filter(pk=number.pk).exists()


def test_deleting_an_organization_deletes_its_trunk_in_livekit_too(
    staff_client, outsider, fake_livekit
) -> None:
    """Its rows' cascade left the trunk, carrier credentials included, in LiveKit."""
    trunk = phone_ready(outsider)

    response = staff_client.post(
        reverse("admin:accounts_organization_delete", args=[outsider.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Organization.objects.filter(pk=outsider.pk).exists()
    (sent,) = fake_livekit.calls("DeleteSIPTrunk")
    assert sent.body == {"sipTrunkId": trunk.livekit_trunk_id}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_organization_given_its_first_workflow_while_staff_delete_it_is_kept_whole(
    staff_client, outsider, fake_livekit
) -> None:
    """The delete page found nothing that keeps the organization, then its customer
    created a first workflow: the deletion had LiveKit delete the trunk, then the
    workflow refused the organization's delete (a 500), and its rows, rolled back, were
    left with no trunk in LiveKit: every phone call failed from then on. (The workflow
    is created from the database driver's hook, as the admin logs the deletion.)"""
    from django.db import connection

    from workflows.demo import DEMO_DEFINITION
    from workflows.services import workflow_create

    phone_ready(outsider)
    created = threading.Event()

    def create_workflow_elsewhere() -> None:
        from django.db import connection as own

        try:
            workflow_create(
                organization=outsider, slug="first", name="First", definition=DEMO_DEFINITION
            )
            created.set()
        finally:
            own.close()

    def once_checked(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "django_admin_log"'):
            thread = threading.Thread(target=create_workflow_elsewhere)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(once_checked):
        response = staff_client.post(
            reverse("admin:accounts_organization_delete", args=[outsider.pk]),
            {"post": "yes"},
            follow=True,
        )

    assert created.is_set()
    assert response.status_code == 200
    assert "kept" in the_one_message(response)
    assert Organization.objects.filter(pk=outsider.pk).exists()
    assert SipTrunk.objects.filter(organization=outsider).exists()
    assert fake_livekit.calls("DeleteSIPTrunk") == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_organization_deleted_while_its_customer_deletes_a_trunk_never_deadlocks(
    outsider_api, outsider, fake_livekit
) -> None:
    """A trunk's deletion locks the trunk, then (LiveKit asked) the organization's row;
    the organization's deletion must take them in that order too. (It starts as LiveKit
    deletes the trunk, and the trunk's deletion goes on once it waits for a lock.)"""
    from django.db import connection

    from telephony.services import organization_delete
    from tests.locks import a_session_waits_for_a_lock

    trunk = phone_ready(outsider)
    errors: list[BaseException] = []

    def delete_organization_elsewhere() -> None:
        try:
            organization_delete(Organization.objects.get(pk=outsider.pk))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    deletion = threading.Thread(target=delete_organization_elsewhere)

    def while_livekit_deletes_the_trunk(method: str) -> None:
        if method != "DeleteSIPTrunk" or deletion.is_alive():
            return
        deletion.start()
        try:
            for _ in range(200):
                if a_session_waits_for_a_lock():
                    return
                time.sleep(0.02)
        finally:
            connection.close()

    fake_livekit.on_request = while_livekit_deletes_the_trunk
    outsider_api.raise_request_exception = False
    response = outsider_api.delete(f"/api/v1/sip-trunks/{trunk.pk}")
    deletion.join(20)

    assert response.status_code == 204, response.content
    assert errors == []
    assert not Organization.objects.filter(pk=outsider.pk).exists()


def test_staff_cannot_set_a_default_caller_number_no_trunk_of_the_organization_has(
    staff_client, organization, fake_livekit
) -> None:
    phone_ready(organization)
    organization.refresh_from_db()
    url = reverse("admin:accounts_organization_change", args=[organization.pk])
    form = {
        "slug": organization.slug,
        "name": organization.name,
        "default_caller_number": "+14155550999",
        "allowed_destination_countries": '["US"]',
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
    }

    response = staff_client.post(url, form)

    assert response.status_code == 200  # the form again, with the error
    assert "default_caller_number" in response.context["adminform"].form.errors
    organization.refresh_from_db()
    assert organization.default_caller_number != "+14155550999"
    # One of its trunk's numbers is taken.
    assert staff_client.post(url, {**form, "default_caller_number": CALLER}).status_code == 302
    organization.refresh_from_db()
    assert organization.default_caller_number == CALLER


def test_a_trunk_listing_a_number_another_organization_mapped_is_a_form_error_naming_why(
    staff_client, organization, outsider, fake_livekit
) -> None:
    """The service's refusal ({"numbers": {0: [...]}}) reaches staff as its message, not
    as the word "numbers"."""
    PhoneNumberFactory(trunk=inbound_trunk(outsider, numbers=(INBOUND_NUMBER,)))

    response = staff_client.post(
        ADD_URL,
        add_form(organization, direction="inbound", address="", numbers=f'["{INBOUND_NUMBER}"]'),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "This number is not available."
    ]
    assert SipTrunk.objects.filter(organization=organization).count() == 0
