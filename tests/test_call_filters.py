"""Query forms generated clients send for the calls list filters."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.http import QueryDict
from rest_framework.test import APIClient

from calls.filters import CallFilter
from calls.models import Call, CallStatus
from tests.factories import CallFactory

CALLS = "/api/v1/calls"


def test_a_repeated_status_parameter_means_the_same_as_a_comma_separated_one(
    api: APIClient, organization
) -> None:
    active = CallFactory(organization=organization, active=True)
    completed = CallFactory(organization=organization, completed=True)
    CallFactory(organization=organization, status=CallStatus.FAILED)

    body = api.get(f"{CALLS}?status=active&status=completed").json()

    assert {i["id"] for i in body["items"]} == {str(active.id), str(completed.id)}
    assert body["total"] == 2


def test_an_unknown_status_among_repeated_ones_is_400(api: APIClient) -> None:
    response = api.get(f"{CALLS}?status=active&status=ringing")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["status"]


def test_one_form_class_serves_every_request_and_still_validates_each() -> None:
    good = CallFilter(QueryDict("user_id=u1"), queryset=Call.objects.none())
    bad = CallFilter(QueryDict("status=ringing&workflow_id=nope"), queryset=Call.objects.none())

    assert good.get_form_class() is bad.get_form_class()
    assert good.is_valid()
    assert not bad.is_valid()
    assert set(bad.errors) == {"status", "workflow_id"}
    assert good.form.cleaned_data["user_id"] == "u1"


def test_each_requests_form_shares_the_fields_yet_keeps_its_own_data_and_errors() -> None:
    first = CallFilter(QueryDict("status=ringing"), queryset=Call.objects.none())
    second = CallFilter(QueryDict("status=active"), queryset=Call.objects.none())

    assert first.form.fields["status"] is second.form.fields["status"]
    assert first.form.fields is not second.form.fields
    assert not first.is_valid()
    assert second.is_valid()
    assert set(first.errors) == {"status"}
    assert second.form.cleaned_data["status"] == ["active"]


def test_a_call_is_found_by_the_user_id_it_was_created_with_surrounding_spaces_and_all(
    api: APIClient, workflow
) -> None:
    """Create trimmed the user id and the filter did not: "user-123 " found nothing."""
    created = api.post(CALLS, {"workflow_slug": "daily-call", "user_id": "user-123 "})
    assert created.status_code == 201

    found = api.get(CALLS, {"user_id": "user-123 "}).json()
    trimmed = api.get(CALLS, {"user_id": "user-123"}).json()

    assert [item["id"] for item in found["items"]] == [created.json()["call_id"]]
    assert found["items"][0]["user_id"] == "user-123 "
    assert trimmed["items"] == []


def test_a_window_whose_offset_plus_was_not_url_encoded_reads_as_that_offset(
    api: APIClient, organization
) -> None:
    """`?started_after=…T10:30:00+01:00` typed into a URL: the "+" arrives as a space."""
    t = datetime.datetime(2026, 1, 17, 9, 30, tzinfo=datetime.UTC)
    after = CallFactory(
        organization=organization,
        completed=True,
        created_at=t,
        started_at=t + datetime.timedelta(seconds=1),
    )
    CallFactory(
        organization=organization,
        completed=True,
        created_at=t - datetime.timedelta(minutes=2),
        started_at=t - datetime.timedelta(minutes=1),
    )

    unencoded = api.get(f"{CALLS}?started_after=2026-01-17T10:30:00+01:00")
    encoded = api.get(f"{CALLS}?started_after=2026-01-17T10:30:00%2B01:00")

    assert unencoded.status_code == 200
    assert [i["id"] for i in unencoded.json()["items"]] == [str(after.id)]
    assert unencoded.json() == encoded.json()


@pytest.mark.parametrize("given", ["2026-01-17T00:00:00", "2026-01-17"])
def test_a_window_without_an_offset_is_utc_and_the_schema_says_so(
    api: APIClient, organization, given
) -> None:
    """A naive time or a date alone was read as UTC, which the schema never said: a
    client meaning its local midnight got calls hours off without a word."""
    midnight = datetime.datetime(2026, 1, 17, tzinfo=datetime.UTC)
    at_midnight = CallFactory(
        organization=organization, completed=True, created_at=midnight, started_at=midnight
    )
    before = CallFactory(
        organization=organization,
        completed=True,
        created_at=midnight - datetime.timedelta(minutes=1),
        started_at=midnight - datetime.timedelta(seconds=1),
    )

    after_it = api.get(CALLS, {"started_after": given}).json()["items"]
    before_it = api.get(CALLS, {"started_before": given}).json()["items"]

    assert [i["id"] for i in after_it] == [str(at_midnight.id)]
    assert [i["id"] for i in before_it] == [str(before.id)]
    schema = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())
    parameters = schema["paths"]["/api/v1/calls"]["get"]["parameters"]
    for name in ("started_after", "started_before"):
        (described,) = [p["description"] for p in parameters if p["name"] == name]
        assert "without an offset" in described and "UTC" in described, described
