"""Query forms generated clients send for the calls list filters."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.http import QueryDict
from django.utils import timezone
from rest_framework.test import APIClient

from analysis.models import AnalysisStatus, CallAnalysis
from calls.filters import CallFilter
from calls.lifecycle import END_REASON_PATTERN, END_REASONS
from calls.models import Call, CallStatus
from tests.factories import CallFactory, WorkflowFactory

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


@pytest.mark.parametrize(
    ("after", "before"),
    [
        ("2026-01-18T00:00:00Z", "2026-01-17T00:00:00Z"),  # swapped
        ("2026-01-17T00:00:00Z", "2026-01-17T00:00:00Z"),  # no time between them
        ("2026-01-17T01:00:00%2B01:00", "2026-01-17"),  # the same instant, told twice
    ],
)
def test_a_started_window_that_ends_before_it_begins_is_400_naming_started_after(
    api: APIClient, organization, after: str, before: str
) -> None:
    """Swapped bounds listed nothing with a 200: a client's mistake read as "no calls"."""
    at = datetime.datetime(2026, 1, 17, 12, tzinfo=datetime.UTC)
    CallFactory(
        organization=organization,
        completed=True,
        created_at=at - datetime.timedelta(seconds=5),
        started_at=at,
    )

    response = api.get(f"{CALLS}?started_after={after}&started_before={before}")

    assert response.status_code == 400, response.content
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "invalid",
                "detail": "Must be before `started_before`.",
                "attr": "started_after",
            }
        ],
    }


def test_a_started_window_of_one_microsecond_is_a_window(api: APIClient, organization) -> None:
    at = datetime.datetime(2026, 1, 17, 12, tzinfo=datetime.UTC)
    call = CallFactory(
        organization=organization,
        completed=True,
        created_at=at - datetime.timedelta(seconds=5),
        started_at=at,
    )
    after, before = _iso(at), _iso(at + datetime.timedelta(microseconds=1))

    body = api.get(CALLS, {"started_after": after, "started_before": before}).json()

    assert [i["id"] for i in body["items"]] == [str(call.id)]


# --- direction and end_reason ---------------------------------------------------------


def _iso(value: datetime.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _ended(organization, *, direction: str, end_reason: str, **fields) -> Call:
    return CallFactory(
        organization=organization,
        completed=True,
        status=CallStatus.FAILED if end_reason in ("busy", "no_answer") else CallStatus.COMPLETED,
        direction=direction,
        end_reason=end_reason,
        **fields,
    )


def test_direction_filter_lists_that_directions_calls_in_the_page_shape(
    api: APIClient, organization, outsider
) -> None:
    outbound = _ended(organization, direction="outbound", end_reason="voicemail")
    _ended(organization, direction="inbound", end_reason="user_hangup")
    _ended(outsider, direction="outbound", end_reason="voicemail")

    body = api.get(CALLS, {"direction": "outbound"}).json()

    assert body == {
        "items": [
            {
                "id": str(outbound.id),
                "workflow_id": str(outbound.workflow_id),
                "workflow_slug": outbound.workflow_slug,
                "user_id": outbound.user_id,
                "status": "completed",
                "direction": "outbound",
                "channel": "web",
                "duration_seconds": 180,
                "agent_history": ["greeter-agent", "meal-agent"],
                "current_agent": None,
                "end_reason": "voicemail",
                "started_at": _iso(outbound.started_at),
                "ended_at": _iso(outbound.ended_at),
                "created_at": _iso(outbound.created_at),
            }
        ],
        "total": 1,
        "page": 1,
        "page_size": 20,
        "pages": 1,
    }


def test_end_reason_filter_takes_one_several_comma_separated_or_repeated_values(
    api: APIClient, organization, outsider
) -> None:
    voicemail = _ended(organization, direction="outbound", end_reason="voicemail")
    no_answer = _ended(organization, direction="outbound", end_reason="no_answer")
    _ended(organization, direction="outbound", end_reason="busy")
    _ended(organization, direction="inbound", end_reason="user_hangup")
    _ended(outsider, direction="outbound", end_reason="voicemail")
    CallFactory(organization=organization)  # not ended: no end reason

    def ids(query: str) -> tuple[set[str], int]:
        body = api.get(f"{CALLS}?{query}").json()
        return {item["id"] for item in body["items"]}, body["total"]

    assert ids("end_reason=voicemail") == ({str(voicemail.id)}, 1)
    both = ({str(voicemail.id), str(no_answer.id)}, 2)
    assert ids("end_reason=voicemail,no_answer") == both
    assert ids("end_reason=voicemail&end_reason=no_answer") == both


def test_direction_and_end_reason_combine_with_each_other_and_every_other_filter(
    api: APIClient, organization, workflow
) -> None:
    t = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)
    match = _ended(
        organization,
        direction="outbound",
        end_reason="voicemail",
        workflow=workflow,
        user_id="u1",
        created_at=t,
        started_at=t + datetime.timedelta(seconds=5),
    )
    others = [
        {"direction": "inbound"},
        {"end_reason": "transferred"},
        {"user_id": "u2"},
        {"workflow": WorkflowFactory(organization=organization)},
        {"created_at": t - datetime.timedelta(days=2)},
    ]
    for changed in others:
        fields = {
            "direction": "outbound",
            "end_reason": "voicemail",
            "workflow": workflow,
            "user_id": "u1",
            "created_at": t,
            **changed,
        }
        _ended(organization, started_at=fields["created_at"], **fields)
    CallAnalysis.objects.create(call=match, status=AnalysisStatus.COMPLETED, success=True)

    body = api.get(
        CALLS,
        {
            "direction": "outbound",
            "end_reason": "voicemail,busy",
            "status": "completed",
            "workflow_id": str(workflow.id),
            "user_id": "u1",
            "started_after": "2026-01-17T00:00:00Z",
            "started_before": "2026-01-18T00:00:00Z",
            "success": "true",
            "analysis_status": "completed",
        },
    ).json()

    assert [i["id"] for i in body["items"]] == [str(match.id)]
    assert body["total"] == 1
    assert api.get(CALLS, {"direction": "outbound", "success": "false"}).json()["total"] == 0


def test_the_end_reason_filter_knows_every_reason_the_platform_and_its_agent_record(
    api: APIClient, organization
) -> None:
    """The agent hangs up on a silent caller with `silence_timeout`."""
    silent = _ended(organization, direction="inbound", end_reason="silence_timeout")

    body = api.get(CALLS, {"end_reason": "silence_timeout"}).json()

    assert [i["id"] for i in body["items"]] == [str(silent.id)]


def test_end_reason_filter_takes_a_reason_the_agent_ended_the_call_with_of_its_own(
    api: APIClient, agent_api: APIClient, organization, outsider
) -> None:
    """The agent worker may end a call with a reason of its own, which the list then
    shows; the filter finds the calls by it."""
    call = CallFactory(organization=organization, active=True)
    _ended(organization, direction="inbound", end_reason="user_hangup")
    _ended(outsider, direction="inbound", end_reason="caller_wants_a_callback")
    ending = {
        "id": "7b0e6f7c-52a4-4d7a-9c3e-2b8f43a1d0e1",
        "type": "status",
        "timestamp": _iso(timezone.now()),
        "status": "completed",
        "reason": "caller_wants_a_callback",
    }
    assert agent_api.post(
        f"/api/v1/agent/calls/{call.pk}/events", {"events": [ending]}, format="json"
    ).json() == {"accepted": 1, "duplicates": 0}
    call.refresh_from_db()

    body = api.get(f"{CALLS}?end_reason=caller_wants_a_callback").json()

    assert body == {
        "items": [
            {
                "id": str(call.id),
                "workflow_id": str(call.workflow_id),
                "workflow_slug": call.workflow_slug,
                "user_id": call.user_id,
                "status": "completed",
                "direction": "inbound",
                "channel": "web",
                "duration_seconds": int((call.ended_at - call.started_at).total_seconds()),
                "agent_history": call.agent_history,
                "current_agent": None,
                "end_reason": "caller_wants_a_callback",
                "started_at": _iso(call.started_at),
                "ended_at": _iso(call.ended_at),
                "created_at": _iso(call.created_at),
            }
        ],
        "total": 1,
        "page": 1,
        "page_size": 20,
        "pages": 1,
    }
    assert (
        api.get(CALLS, {"end_reason": "user_hangup,caller_wants_a_callback"}).json()["total"] == 2
    )


@pytest.mark.parametrize(
    ("query", "attr", "code"),
    [
        ("direction=sideways", "direction", "invalid_choice"),
        ("direction=", "direction", "blank"),
        ("direction=OUTBOUND", "direction", "invalid_choice"),
        ("direction=outbound,inbound", "direction", "invalid_choice"),
        ("direction=outbound&direction=inbound", "direction", "repeated"),
        ("direction=%00", "direction", "invalid_choice"),
        # Any reason the agent may report is taken; one it could not report is not.
        ("end_reason=Voicemail", "end_reason", "invalid"),
        ("end_reason=voicemail,NO_ANSWER", "end_reason", "invalid"),
        ("end_reason=voicemail&end_reason=no-answer", "end_reason", "invalid"),
        ("end_reason=no%20answer", "end_reason", "invalid"),
        ("end_reason=%20voicemail", "end_reason", "invalid"),
        ("end_reason=voicemail%0A", "end_reason", "invalid"),
        ("end_reason=voicemail%00", "end_reason", "invalid"),
        ("end_reason=%00", "end_reason", "invalid"),
        ("end_reason=r%C3%A9ponse", "end_reason", "invalid"),
        ("end_reason=" + "x" * 51, "end_reason", "invalid"),
        ("end_reason=" + "x" * 5000, "end_reason", "invalid"),
        ("end_reason=", "end_reason", "blank"),
        ("end_reason=,", "end_reason", "blank"),
        ("end_reason=voicemail,", "end_reason", "blank"),
    ],
)
def test_a_bad_direction_or_end_reason_is_400_naming_it(
    api: APIClient, organization, query: str, attr: str, code: str
) -> None:
    response = api.get(f"{CALLS}?{query}")

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["type"] == "validation_error"
    assert [(e["attr"], e["code"]) for e in body["errors"]] == [(attr, code)]


def test_a_list_filtered_by_direction_and_end_reason_costs_the_same_queries(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    for _ in range(25):
        _ended(organization, direction="outbound", end_reason="no_answer")

    with django_assert_num_queries(3):  # API key + count + page
        body = api.get(
            CALLS, {"direction": "outbound", "end_reason": "no_answer,busy", "page_size": 25}
        ).json()
    assert len(body["items"]) == 25


def test_the_schema_states_the_directions_and_the_end_reasons_the_filters_take() -> None:
    """Any reason the agent may report (its pattern), not an enum of the platform's; the
    platform's are named in the description."""
    schema = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())
    parameters = {p["name"]: p for p in schema["paths"]["/api/v1/calls"]["get"]["parameters"]}

    assert parameters["direction"]["schema"]["$ref"] == "#/components/schemas/CallDirectionEnum"
    end_reason = parameters["end_reason"]
    assert (end_reason["style"], end_reason["explode"]) == ("form", False)
    assert end_reason["schema"] == {
        "type": "array",
        "items": {"type": "string", "pattern": END_REASON_PATTERN},
        "minItems": 1,
    }
    assert "comma-separated" in end_reason["description"]
    assert all(f"`{reason}`" in end_reason["description"] for reason in END_REASONS)
    agent_status = schema["components"]["schemas"]["StatusEventRequest"]["properties"]["reason"]
    assert agent_status["pattern"] == END_REASON_PATTERN
