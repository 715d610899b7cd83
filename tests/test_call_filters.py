"""Query forms generated clients send for the calls list filters."""

from __future__ import annotations

from rest_framework.test import APIClient

from calls.models import CallStatus
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
