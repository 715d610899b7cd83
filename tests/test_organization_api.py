"""GET/PATCH /api/v1/organization: the organization's own phone settings, lowered
never raised above the ceilings only staff set."""

from __future__ import annotations

import pytest

from accounts.models import Organization
from tests.phone import CALLER, phone_ready

pytestmark = pytest.mark.django_db

URL = "/api/v1/organization"


def settings_body(organization: Organization, **changes: object) -> dict:
    return {
        "id": str(organization.pk),
        "slug": organization.slug,
        "name": organization.name,
        "concurrency_limit": 10,
        "default_caller_number": None,
        "outbound_calls_per_minute": 10,
        "outbound_calls_per_day": 500,
        "max_outbound_calls_per_minute": 10,
        "max_outbound_calls_per_day": 500,
        "allowed_destination_countries": [],
        "transcript_retention_days": None,
        "recording_retention_days": None,
        "user_data_retention_days": None,
        **changes,
    }


def test_a_new_organization_may_call_no_country_at_10_a_minute_and_500_a_day(
    api, organization, settings
) -> None:
    settings.CALLS_CONCURRENCY_LIMIT = 10

    response = api.get(URL)

    assert response.status_code == 200
    assert response.json() == settings_body(organization)


def test_a_client_lowers_its_rate_and_daily_cap(api, organization, settings) -> None:
    settings.CALLS_CONCURRENCY_LIMIT = 10

    response = api.patch(
        URL, {"outbound_calls_per_minute": 3, "outbound_calls_per_day": 40}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == settings_body(
        organization, outbound_calls_per_minute=3, outbound_calls_per_day=40
    )
    assert api.get(URL).json() == response.json()


@pytest.mark.parametrize(
    ("name", "ceiling"), [("outbound_calls_per_minute", 10), ("outbound_calls_per_day", 500)]
)
def test_a_client_never_raises_a_limit_above_its_ceiling(api, organization, name, ceiling):
    response = api.patch(URL, {name: ceiling + 1}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "above_maximum",
                "detail": f"Must be at most {ceiling}, your organization's maximum.",
                "attr": name,
            }
        ],
    }
    organization.refresh_from_db()
    assert getattr(organization, name) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("allowed_destination_countries", ["US"]),
        ("max_outbound_calls_per_minute", 100),
        ("max_outbound_calls_per_day", 10000),
        ("concurrency_limit", 7),
    ],
)
def test_the_ceilings_staff_set_are_read_only(api, organization, name, value) -> None:
    response = api.patch(URL, {name: value}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"code": "read_only", "detail": "Read-only; support sets it.", "attr": name}
    ]
    organization.refresh_from_db()
    assert getattr(organization, name) != value


def test_the_settings_read_back_whole_with_one_changed_are_a_valid_patch(api, organization) -> None:
    """Support's fields sent back as they are change nothing (a GET, one setting changed,
    the whole PATCHed back); it was a 400 `read_only` on each."""
    settings = api.get(URL).json()

    response = api.patch(URL, {**settings, "transcript_retention_days": 30}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json() == {**settings, "transcript_retention_days": 30}


def test_limits_read_back_as_they_are_keep_following_the_ceilings_support_raises(
    api, organization
) -> None:
    """GET shows the ceiling as the limit of an organization that set none; PATCHed back
    whole, that pinned it there, and a ceiling support raised later changed nothing."""
    settings = api.get(URL).json()
    api.patch(URL, {**settings, "transcript_retention_days": 30}, format="json")

    Organization.objects.filter(pk=organization.pk).update(
        max_outbound_calls_per_minute=50, max_outbound_calls_per_day=2000
    )

    limits = api.get(URL).json()
    assert (limits["outbound_calls_per_minute"], limits["outbound_calls_per_day"]) == (50, 2000)


def test_a_limit_read_back_under_a_lowered_ceiling_comes_back_when_the_ceiling_does(
    api, organization
) -> None:
    api.patch(URL, {"outbound_calls_per_minute": 8}, format="json")
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_minute=5)
    api.patch(URL, {**api.get(URL).json(), "transcript_retention_days": 30}, format="json")

    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_minute=10)

    assert api.get(URL).json()["outbound_calls_per_minute"] == 8


@pytest.mark.parametrize("limit", ["outbound_calls_per_minute", "outbound_calls_per_day"])
def test_the_settings_read_back_whole_under_a_ceiling_of_0_are_a_valid_patch(
    api, organization, limit
) -> None:
    """Support stops an organization's phone calls with a ceiling of 0 (toll fraud): GET
    then shows its limit as 0, and that sent back was a 400 (a limit is at least 1)."""
    Organization.objects.filter(pk=organization.pk).update(**{f"max_{limit}": 0})
    settings = api.get(URL).json()
    assert settings[limit] == 0

    response = api.patch(URL, {**settings, "transcript_retention_days": 30}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json() == {**settings, "transcript_retention_days": 30}
    organization.refresh_from_db()
    assert getattr(organization, limit) is None


def test_a_limit_of_0_is_refused_under_a_ceiling_above_it(api, organization) -> None:
    response = api.patch(URL, {"outbound_calls_per_minute": 0}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "outbound_calls_per_minute"
    organization.refresh_from_db()
    assert organization.outbound_calls_per_minute is None


def test_a_limit_set_to_null_follows_the_ceiling_again(api, organization) -> None:
    api.patch(URL, {"outbound_calls_per_minute": 4, "outbound_calls_per_day": 40}, format="json")

    response = api.patch(
        URL, {"outbound_calls_per_minute": None, "outbound_calls_per_day": None}, format="json"
    )
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_minute=50)

    assert response.status_code == 200
    assert (
        response.json()["outbound_calls_per_minute"],
        response.json()["outbound_calls_per_day"],
    ) == (10, 500)
    assert api.get(URL).json()["outbound_calls_per_minute"] == 50


def test_a_lowered_ceiling_lowers_the_effective_limit(api, organization) -> None:
    api.patch(URL, {"outbound_calls_per_minute": 8}, format="json")
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_minute=5)

    assert api.get(URL).json()["outbound_calls_per_minute"] == 5


def test_the_default_caller_number_must_be_one_of_the_organizations_own(
    api, organization, fake_livekit
) -> None:
    phone_ready(organization)

    refused = api.patch(URL, {"default_caller_number": "+14155550199"}, format="json")
    accepted = api.patch(URL, {"default_caller_number": CALLER}, format="json")
    cleared = api.patch(URL, {"default_caller_number": None}, format="json")

    assert refused.status_code == 400
    assert refused.json()["errors"] == [
        {
            "code": "not_your_number",
            "detail": "Must be a number of one of your organization's outbound SIP trunks.",
            "attr": "default_caller_number",
        }
    ]
    assert accepted.json()["default_caller_number"] == CALLER
    assert cleared.json()["default_caller_number"] is None


def test_the_organization_needs_a_client_key(anonymous_api, agent_api) -> None:
    assert anonymous_api.get(URL).status_code == 401
    assert agent_api.get(URL).status_code == 403


def test_the_organization_takes_a_fixed_number_of_queries(api, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):  # the key and its organization
        assert api.get(URL).status_code == 200


RETENTION = ("transcript_retention_days", "recording_retention_days", "user_data_retention_days")


def test_a_client_sets_and_clears_its_retention_in_days(api, organization, settings) -> None:
    settings.CALLS_CONCURRENCY_LIMIT = 10
    days = {"transcript_retention_days": 30, "recording_retention_days": 1}
    days["user_data_retention_days"] = 3650

    response = api.patch(URL, days, format="json")
    cleared = api.patch(URL, {"recording_retention_days": None}, format="json")

    assert response.status_code == 200
    assert response.json() == settings_body(organization, **days)
    assert cleared.json() == settings_body(
        organization, **{**days, "recording_retention_days": None}
    )
    organization.refresh_from_db()
    assert (organization.transcript_retention_days, organization.recording_retention_days) == (
        30,
        None,
    )


@pytest.mark.parametrize("name", RETENTION)
@pytest.mark.parametrize(
    ("value", "code"),
    [
        (0, "min_value"),
        (-5, "min_value"),
        (3651, "max_value"),
        ("30", "invalid"),
        (1.5, "invalid"),
        (True, "invalid"),
        ([30], "invalid"),
    ],
)
def test_a_retention_is_a_whole_number_of_days_from_1_to_3650(
    api, organization, name, value, code
) -> None:
    response = api.patch(URL, {name: value}, format="json")

    assert response.status_code == 400
    assert [(e["code"], e["attr"]) for e in response.json()["errors"]] == [(code, name)]
    organization.refresh_from_db()
    assert getattr(organization, name) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_default_caller_number_set_while_its_trunk_is_deleted_is_not_left_dangling(
    api, organization, sip_fake
):
    """Checked against the outbound trunks, then saved, with no lock between: a trunk
    deleted in between (its deletion clears only a default already stored) left the
    default naming a number no trunk has, and every phone call without `from_number`
    was a 400 about a `from_number` nobody sent. (The deletion starts from the database
    driver's hook, just before the PATCH's UPDATE; it may wait for the PATCH.)"""
    import threading

    from django.db import connection

    from telephony.services import sip_trunk_delete

    trunk = phone_ready(organization)
    deletion = threading.Thread(target=lambda: _trunk_delete_elsewhere(sip_trunk_delete, trunk))

    def before_update(execute, sql, params, many, context):
        if sql.startswith('UPDATE "accounts_organization"') and not deletion.is_alive():
            deletion.start()
            deletion.join(timeout=2)  # done, unless it waits for this PATCH's lock
        return execute(sql, params, many, context)

    with connection.execute_wrapper(before_update):
        patched = api.patch(
            "/api/v1/organization", {"default_caller_number": CALLER}, format="json"
        )
    deletion.join()

    assert not sip_fake.trunks
    organization.refresh_from_db()
    assert (patched.status_code, organization.default_caller_number) in [(200, None), (400, None)]


def _trunk_delete_elsewhere(sip_trunk_delete, trunk) -> None:
    from django.db import connection as own

    try:
        sip_trunk_delete(trunk=trunk)  # what DELETE /sip-trunks/{id} runs
    finally:
        own.close()
