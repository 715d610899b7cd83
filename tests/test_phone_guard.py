"""The toll-fraud guard on POST /calls with `phone_number`: every refusal is a 400 or
429 before anything is dialed, logged with the organization but never the whole
number (DESIGN.md "Toll-fraud guard")."""

from __future__ import annotations

import datetime
import logging

import pytest
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call
from telephony.services import sip_trunk_create
from tests.factories import CallFactory
from tests.phone import CALLEE, CALLS, phone_ready, run_dial_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def phone(organization, workflow, sip_fake):
    return phone_ready(organization)


def post(api, **body):
    return api.post(CALLS, {"workflow_slug": "daily-call", **body}, format="json")


def error(code: str, detail: str, attr: str | None) -> dict:
    return {"type": "validation_error", "errors": [{"code": code, "detail": detail, "attr": attr}]}


def assert_nothing_dialed(sip_fake) -> None:
    run_dial_worker()
    assert Call.objects.count() == 0
    assert sip_fake.calls("CreateSIPParticipant") == []


def test_a_country_staff_did_not_allow_is_400_destination_not_allowed(api, phone, sip_fake) -> None:
    response = post(api, phone_number="+442071838750")

    assert response.status_code == 400
    assert response.json() == error(
        "destination_not_allowed",
        "Calls to this country (GB) are not allowed for your organization; ask support to "
        "allow it.",
        "phone_number",
    )
    assert_nothing_dialed(sip_fake)


def test_no_country_is_allowed_until_staff_allow_one(api, organization, workflow, sip_fake) -> None:
    phone_ready(organization, countries=())

    response = post(api, phone_number=CALLEE)

    assert response.json()["errors"][0]["code"] == "destination_not_allowed"
    assert_nothing_dialed(sip_fake)


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+1415555012a", "invalid_phone_number"),
        ("+1 415 555 0123", "invalid_phone_number"),
        ("14155550123", "invalid_phone_number"),
        ("+0123456", "invalid_phone_number"),
        ("+4915", "invalid_phone_number"),
        ("+1911", "invalid_phone_number"),
        ("+33112", "emergency_number"),
        ("+19002345678", "costly_number"),
        ("+448431234567", "costly_number"),
    ],
    ids=[
        "letters",
        "spaces",
        "no-plus",
        "plus-zero",
        "too-short",
        "us-911",
        "france-112",
        "us-premium-900",
        "uk-shared-cost-0843",
    ],
)
def test_numbers_voicecalls_will_not_dial_are_400_naming_phone_number(
    api, organization, phone, sip_fake, number, code
) -> None:
    Organization.objects.filter(pk=organization.pk).update(
        allowed_destination_countries=["US", "GB", "FR", "DE"]
    )

    response = post(api, phone_number=number)

    assert response.status_code == 400
    (only,) = response.json()["errors"]
    assert (only["code"], only["attr"]) == (code, "phone_number")
    assert_nothing_dialed(sip_fake)


def test_thirty_digits_are_400_naming_phone_number(api, phone, sip_fake) -> None:
    response = post(api, phone_number="+" + "1" * 30)

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "phone_number"
    assert_nothing_dialed(sip_fake)


def test_from_number_must_be_one_of_the_organizations_outbound_numbers(
    api, phone, outsider, sip_fake
) -> None:
    sip_trunk_create(  # another organization's outbound number
        organization=outsider,
        name="theirs",
        direction="outbound",
        address="sip.example.com",
        numbers=["+14155550199"],
    )

    response = post(api, phone_number=CALLEE, from_number="+14155550199")

    assert response.status_code == 400
    assert response.json() == error(
        "not_your_number",
        "Must be a number of one of your organization's outbound SIP trunks.",
        "from_number",
    )
    assert_nothing_dialed(sip_fake)


def test_without_an_outbound_trunk_a_phone_call_is_400(api, organization, workflow, sip_fake):
    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["US"])

    response = post(api, phone_number=CALLEE)

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "no_outbound_trunk"
    assert_nothing_dialed(sip_fake)


def test_from_number_without_phone_number_is_400(api, workflow) -> None:
    response = post(api, from_number="+14155550100")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "from_number"


def test_over_the_rate_per_minute_is_429_with_retry_after_and_meta(
    api, organization, phone
) -> None:
    Organization.objects.filter(pk=organization.pk).update(outbound_calls_per_minute=2)

    statuses = [post(api, phone_number=CALLEE).status_code for _ in range(3)]
    refused = post(api, phone_number=CALLEE)

    assert statuses == [201, 201, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "outbound_rate_limited",
                "detail": "Your organization started as many phone calls as it may for now; "
                "retry later.",
                "attr": None,
            }
        ],
        "meta": {"limit": "outbound_calls_per_minute", "outbound_calls_per_minute": 2},
    }
    assert Call.objects.count() == 2


@pytest.mark.parametrize("ceiling", ["max_outbound_calls_per_minute", "max_outbound_calls_per_day"])
def test_a_ceiling_of_zero_staff_set_refuses_every_phone_call_with_429(
    api, organization, phone, sip_fake, ceiling
) -> None:
    """Staff stop an organization's phone calls (toll fraud) with a ceiling of 0, which
    the admin accepts: per minute, that was a ZeroDivisionError, a 500 on every call."""
    organization.refresh_from_db()
    setattr(organization, ceiling, 0)
    organization.full_clean()  # what the admin's form checks
    organization.save(update_fields=[ceiling])
    api.raise_request_exception = False

    refused = post(api, phone_number=CALLEE)

    assert refused.status_code == 429, refused.content
    assert int(refused["Retry-After"]) >= 1
    assert refused.json()["errors"][0]["code"] == "outbound_rate_limited"
    assert_nothing_dialed(sip_fake)


def test_over_the_daily_cap_of_outbound_calls_is_429_until_midnight_utc(
    api, organization, phone
) -> None:
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=2)
    yesterday = timezone.now() - datetime.timedelta(days=1, hours=1)
    CallFactory(
        organization=organization, channel="phone", direction="outbound", created_at=yesterday
    )
    CallFactory(organization=organization, channel="web")  # web calls do not count
    # Nor do calls the organization received.
    CallFactory(organization=organization, channel="phone", direction="inbound", completed=True)

    first = post(api, phone_number=CALLEE)
    second = post(api, phone_number=CALLEE)
    refused = post(api, phone_number=CALLEE)

    assert (first.status_code, second.status_code, refused.status_code) == (201, 201, 429)
    assert refused.json()["meta"] == {
        "limit": "outbound_calls_per_day",
        "outbound_calls_per_day": 2,
    }
    now = timezone.now().astimezone(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(refused["Retry-After"]) - (midnight - now).total_seconds()) < 5
    assert Call.objects.filter(channel="phone", direction="outbound").count() == 3


def test_phone_calls_count_against_the_concurrency_limit(api, organization, phone) -> None:
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=1)

    phone_call = post(api, phone_number=CALLEE)
    web_call = post(api)
    another_phone_call = post(api, phone_number=CALLEE)

    assert phone_call.status_code == 201
    assert (web_call.status_code, another_phone_call.status_code) == (429, 429)
    assert web_call.json()["meta"] == {"active_calls": 1, "concurrency_limit": 1}


def test_refusals_are_logged_with_the_organization_but_not_the_whole_number(
    api, organization, phone, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="telephony.guard")

    post(api, phone_number="+442071838750")

    (record,) = [r for r in caplog.records if r.name == "telephony.guard"]
    message = record.getMessage()
    assert str(organization.pk) in message
    assert "destination_not_allowed" in message
    assert "2071838750" not in message
    assert message.endswith("50")


def test_an_ended_phone_call_frees_its_concurrency_slot(api, organization, phone) -> None:
    Organization.objects.filter(pk=organization.pk).update(concurrency_limit=1)
    call_id = post(api, phone_number=CALLEE).json()["call_id"]

    api.post(f"{CALLS}/{call_id}/end")

    assert post(api, phone_number=CALLEE).status_code == 201
