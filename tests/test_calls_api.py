"""The seed's Calls API: create, read, transcript, metrics, token (the list and the
active calls: tests/test_calls_list_api.py)."""

from __future__ import annotations

import datetime
import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from analysis.models import CallAnalysis
from calls.models import Call, CallStatus
from tests.factories import CallFactory, TranscriptEntryFactory, WorkflowFactory
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

CALLS = "/api/v1/calls"


def iso(value: datetime.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# --- POST /calls ---------------------------------------------------------------------


def test_creating_a_call_answers_the_seed_shape(api: APIClient, workflow: Workflow) -> None:
    response = api.post(
        CALLS,
        {
            "workflow_slug": "daily-call",
            "user_id": "user-123",
            "user_data": {"name": "John Doe", "language": "en"},
            "metadata": {"session_id": "abc123", "source": "mobile-app"},
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    call = Call.objects.get()
    assert body == {
        "call_id": str(call.id),
        "room_name": f"call-{call.id}",
        "livekit_url": "ws://localhost:7880",
        "token": body["token"],
        "status": "connecting",
        "channel": "web",
    }
    assert body["token"].startswith("eyJ")
    assert call.user_id == "user-123"
    assert call.user_data == {"name": "John Doe", "language": "en"}
    assert call.metadata == {"session_id": "abc123", "source": "mobile-app"}
    assert call.direction == "inbound"
    assert call.workflow_version == workflow.current_version
    assert call.workflow_slug == "daily-call"


def test_the_answer_with_the_join_token_is_never_cached(api: APIClient, workflow: Workflow) -> None:
    body = {"workflow_slug": "daily-call"}
    created = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")
    replayed = api.post(CALLS, body, format="json", HTTP_IDEMPOTENCY_KEY="order-42")

    assert (created.status_code, replayed.status_code) == (201, 201)
    assert replayed.json()["token"] == created.json()["token"]
    for response in (created, replayed):
        assert "no-store" in response["Cache-Control"]


def test_a_call_needs_only_a_workflow_slug(api: APIClient, workflow: Workflow) -> None:
    response = api.post(CALLS, {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 201
    call = Call.objects.get()
    assert (call.user_id, call.user_data, call.metadata) == (None, {}, {})


def test_an_outbound_call_keeps_its_direction(api: APIClient, workflow: Workflow) -> None:
    api.post(CALLS, {"workflow_slug": "daily-call", "direction": "outbound"}, format="json")

    assert Call.objects.get().direction == "outbound"


def test_unknown_json_fields_are_ignored(api: APIClient, workflow: Workflow) -> None:
    response = api.post(CALLS, {"workflow_slug": "daily-call", "colour": "blue"}, format="json")

    assert response.status_code == 201


def test_creating_a_call_takes_limits_from_the_workflow_version(
    api: APIClient, organization
) -> None:
    definition = {
        "start_agent": "a",
        "agents": [{"name": "a", "instructions": "hi"}],
        "settings": {"connect_timeout_seconds": 15, "max_duration_seconds": 120},
    }
    WorkflowFactory(organization=organization, slug="short", definition=definition)

    api.post(CALLS, {"workflow_slug": "short"}, format="json")

    call = Call.objects.get()
    assert (call.connect_timeout_seconds, call.max_duration_seconds) == (15, 120)


def test_creating_a_call_moves_the_open_call_counter_and_inserts_in_one_transaction(
    api: APIClient, workflow: Workflow, settings, django_assert_num_queries
) -> None:
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]  # no rate row

    # API key, workflow, then in one transaction (a savepoint inside the test's own):
    # the counter's conditional UPDATE and the insert. No count, however many are open.
    with django_assert_num_queries(6):
        response = api.post(CALLS, {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 201
    workflow.organization.refresh_from_db()
    assert workflow.organization.open_calls == 1


def test_an_exempt_organizations_call_is_counted_in_the_same_queries(
    api: APIClient, workflow: Workflow, settings, django_assert_num_queries
) -> None:
    settings.THROTTLE_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]
    settings.CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS = [workflow.organization.slug]

    with django_assert_num_queries(6):  # API key, workflow, savepoint, counter, insert, release
        response = api.post(CALLS, {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 201
    assert Call.objects.get().pk.hex in response.json()["room_name"].replace("-", "")
    workflow.organization.refresh_from_db()
    assert workflow.organization.open_calls == 1


@pytest.mark.parametrize(
    ("body", "attr", "code"),
    [
        ({}, "workflow_slug", "required"),
        ({"workflow_slug": None}, "workflow_slug", "null"),
        ({"workflow_slug": ""}, "workflow_slug", "blank"),
        ({"workflow_slug": "no-such-workflow"}, "workflow_slug", "invalid"),
        ({"workflow_slug": ["daily-call"]}, "workflow_slug", "invalid"),
        ({"workflow_slug": "daily-call", "user_data": [1, 2]}, "user_data", "not_an_object"),
        ({"workflow_slug": "daily-call", "user_data": "John"}, "user_data", "not_an_object"),
        ({"workflow_slug": "daily-call", "metadata": 42}, "metadata", "not_an_object"),
        ({"workflow_slug": "daily-call", "user_id": "u" * 256}, "user_id", "max_length"),
        ({"workflow_slug": "daily-call", "user_id": {"a": 1}}, "user_id", "invalid"),
        ({"workflow_slug": "daily-call", "user_id": ""}, "user_id", "blank"),
        ({"workflow_slug": "daily-call", "user_id": " \t "}, "user_id", "blank"),
        ({"workflow_slug": "daily-call", "direction": "sideways"}, "direction", "invalid_choice"),
        (
            {"workflow_slug": "daily-call", "user_data": {"blob": "x" * (32 * 1024)}},
            "user_data",
            "too_large",
        ),
        (
            {"workflow_slug": "daily-call", "metadata": {"blob": "x" * (16 * 1024)}},
            "metadata",
            "too_large",
        ),
        (
            {
                "workflow_slug": "daily-call",
                "user_data": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
            },
            "user_data",
            "too_deep",
        ),
    ],
)
def test_bad_call_bodies_are_400_naming_the_field_and_write_nothing(
    api: APIClient, workflow: Workflow, body: dict, attr: str, code: str
) -> None:
    response = api.post(CALLS, body, format="json")

    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert [(e["attr"], e["code"]) for e in response.json()["errors"]] == [(attr, code)]
    assert Call.objects.count() == 0


def test_another_organizations_workflow_slug_is_unknown(
    api: APIClient, organization, outsider_workflow: Workflow
) -> None:
    response = api.post(CALLS, {"workflow_slug": outsider_workflow.slug}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "workflow_slug"


def test_a_body_over_one_mebibyte_is_413(api: APIClient, workflow: Workflow) -> None:
    body = json.dumps({"workflow_slug": "daily-call", "metadata": {"x": "y" * (1024 * 1024)}})

    response = api.post(CALLS, body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "request_too_large",
                "detail": "Request body exceeds 1048576 bytes.",
                "attr": None,
            }
        ],
    }
    assert Call.objects.count() == 0


def test_malformed_json_is_a_400_parse_error(api: APIClient, workflow: Workflow) -> None:
    response = api.post(CALLS, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


@pytest.mark.parametrize("number", ["123456789012345678901234567890", "18446744073709551616"])
def test_an_integer_beyond_64_bits_is_a_400_not_a_float(
    api: APIClient, workflow: Workflow, number: str
) -> None:
    body = '{"workflow_slug": "daily-call", "user_data": {"n": NUMBER}}'.replace("NUMBER", number)

    response = api.post(CALLS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "parse_error",
                "detail": f"JSON parse error - the integer {number} does not fit in 64 bits",
                "attr": None,
            }
        ],
    }
    assert Call.objects.count() == 0


@pytest.mark.parametrize("number", ["1e20", "-1e19", "1.8446744073709552e19", "1e308"])
def test_a_float_beyond_64_bits_is_a_400_naming_the_field(
    api: APIClient, workflow: Workflow, number: str
) -> None:
    """PostgreSQL's jsonb answers 1e20 as 100000000000000000000: a number this API's
    own parser refuses, so a client could not send a call's metadata back."""
    body = '{"workflow_slug": "daily-call", "metadata": {"n": NUMBER}}'.replace("NUMBER", number)

    response = api.post(CALLS, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "number_too_large",
                "detail": "Numbers must fit in 64 bits.",
                "attr": "metadata",
            }
        ],
    }
    assert Call.objects.count() == 0


def test_floats_count_toward_the_size_as_they_are_stored_in_full(
    api: APIClient, workflow: Workflow
) -> None:
    """jsonb prints 1e-300 as 0.000…1: 2,000 of them, under 32 KiB as sent, were 600 KiB
    stored and answered on every read of the call."""
    tiny = {f"k{n}": 1e-300 for n in range(2000)}
    assert len(json.dumps(tiny, separators=(",", ":"))) < 32 * 1024

    response = api.post(CALLS, {"workflow_slug": "daily-call", "user_data": tiny}, format="json")

    assert response.status_code == 400
    assert [(e["attr"], e["code"]) for e in response.json()["errors"]] == [
        ("user_data", "too_large")
    ]
    assert Call.objects.count() == 0


@pytest.mark.postgres
def test_a_calls_float_metadata_comes_back_as_a_number_it_can_send_again(
    api: APIClient, workflow: Workflow
) -> None:
    body = '{"workflow_slug": "daily-call", "metadata": {"amount": 1e18, "tiny": 1.5e-7}}'
    created = api.post(CALLS, body, content_type="application/json")
    answered = api.get(f"{CALLS}/{created.json()['call_id']}")

    again = api.post(
        CALLS,
        {"workflow_slug": "daily-call", "metadata": answered.json()["metadata"]},
        format="json",
    )

    assert answered.json()["metadata"] == {"amount": 10**18, "tiny": 1.5e-7}
    assert again.status_code == 201, again.content


def test_64_bit_integers_and_long_digit_strings_come_back_exactly(
    api: APIClient, workflow: Workflow
) -> None:
    user_data = {"max": 18446744073709551615, "min": -9223372036854775808, "id": "1" * 40}
    body = json.dumps({"workflow_slug": "daily-call", "user_data": user_data})

    created = api.post(CALLS, body, content_type="application/json")

    assert created.status_code == 201
    call = api.get(f"{CALLS}/{created.json()['call_id']}")
    assert json.loads(call.content)["user_data"] == user_data


def test_a_json_list_body_is_a_400(api: APIClient, workflow: Workflow) -> None:
    response = api.post(CALLS, "[1, 2]", content_type="application/json")

    assert response.status_code == 400
    assert Call.objects.count() == 0


def test_non_json_content_types_are_415(api: APIClient, workflow: Workflow) -> None:
    response = api.post(CALLS, "workflow_slug=daily-call", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["errors"][0]["code"] == "unsupported_media_type"


def test_paths_have_no_trailing_slash_and_never_redirect(
    api: APIClient, workflow: Workflow
) -> None:
    response = api.post(CALLS + "/", {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


# --- GET /calls/{id} -----------------------------------------------------------------


def test_a_finished_call_shows_every_seed_field(api: APIClient, organization) -> None:
    started = timezone.now() - datetime.timedelta(minutes=10)
    call = CallFactory(
        organization=organization,
        user_id="user-123",
        direction="outbound",
        status=CallStatus.COMPLETED,
        end_reason="user_hangup",
        started_at=started,
        ended_at=started + datetime.timedelta(seconds=180, milliseconds=900),
        agent_history=["greeter-agent", "meal-agent", "feedback-agent"],
        current_agent="feedback-agent",
        stt_latency_ms_sum=360,
        stt_latency_count=3,
        llm_latency_ms_sum=561,
        llm_latency_count=2,
        tts_latency_ms_sum=85,
        tts_latency_count=1,
        total_tokens=1500,
        agent_handoffs=2,
        metadata={"source": "mobile-app"},
        user_data={"name": "John"},
    )

    response = api.get(f"{CALLS}/{call.id}")

    assert response.status_code == 200
    assert response.json() == {
        "id": str(call.id),
        "workflow_id": str(call.workflow_id),
        "workflow_slug": call.workflow_slug,
        "user_id": "user-123",
        "status": "completed",
        "direction": "outbound",
        "channel": "web",
        "duration_seconds": 180,
        "agent_history": ["greeter-agent", "meal-agent", "feedback-agent"],
        "current_agent": None,
        "metrics": {
            "duration_seconds": 180,
            "stt_latency_ms": 120,
            "llm_latency_ms": 280,
            "tts_latency_ms": 85,
            "total_tokens": 1500,
            "agent_handoffs": 2,
            "eou_latency_ms": None,
            "e2e_latency_ms": None,
            "latency": NO_LATENCY_SAMPLES,
            "providers": [],
        },
        # Beyond the seed: null for a workflow without an `analysis` setting.
        "analysis": None,
        "cost": None,
        # Null for a call that was not recorded.
        "recording": None,
        "started_at": iso(call.started_at),
        "ended_at": iso(call.ended_at),
        "created_at": iso(call.created_at),
        "end_reason": "user_hangup",
        "room_name": f"call-{call.id}",
        "phone_number": None,
        "from_number": None,
        "sip_status_code": None,
        "sip_status": None,
        "end_reason_detail": None,
        "transfer_destination": None,
        "agent_joined_at": None,
        "agent_left_at": None,
        "metadata": {"source": "mobile-app"},
        "user_data": {"name": "John"},
    }


def test_a_new_call_has_no_duration_no_agent_and_empty_metrics(
    api: APIClient, organization
) -> None:
    call = CallFactory(organization=organization)

    body = api.get(f"{CALLS}/{call.id}").json()

    assert body["duration_seconds"] is None
    assert body["current_agent"] is None
    assert body["agent_history"] == []
    assert body["metrics"] == {
        "duration_seconds": None,
        "stt_latency_ms": None,
        "llm_latency_ms": None,
        "tts_latency_ms": None,
        "total_tokens": 0,
        "agent_handoffs": 0,
        "eou_latency_ms": None,
        "e2e_latency_ms": None,
        "latency": NO_LATENCY_SAMPLES,
        "providers": [],
    }


def test_an_active_call_counts_its_duration_so_far(api: APIClient, organization) -> None:
    call = CallFactory(
        organization=organization,
        active=True,
        started_at=timezone.now() - datetime.timedelta(seconds=42),
    )

    body = api.get(f"{CALLS}/{call.id}").json()

    assert body["duration_seconds"] in (42, 43)
    assert body["current_agent"] == "greeter-agent"


def test_a_running_calls_duration_is_the_same_at_the_top_and_in_its_metrics(
    api: APIClient, organization, monkeypatch
) -> None:
    """Read off the clock twice, a second could tick between the two (here each read of
    the clock is 0.6 s after the one before)."""
    started = timezone.now() - datetime.timedelta(seconds=42)
    call = CallFactory(organization=organization, active=True, started_at=started)
    reads = iter(started + datetime.timedelta(seconds=42.5 + 0.6 * n) for n in range(100))
    monkeypatch.setattr(timezone, "now", lambda: next(reads))

    body = api.get(f"{CALLS}/{call.id}").json()

    assert body["metrics"]["duration_seconds"] == body["duration_seconds"]


@pytest.mark.parametrize("suffix", ["", "/transcript", "/metrics"])
def test_another_organizations_call_is_404(
    api: APIClient, outsider_workflow: Workflow, suffix: str
) -> None:
    call = CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    response = api.get(f"{CALLS}/{call.id}{suffix}")

    assert response.status_code == 404
    assert response.json() == {
        "type": "client_error",
        "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}],
    }


@pytest.mark.parametrize(
    "call_id", ["not-a-uuid", "12345", "7d3f3a0e-1b7c-4a57-9d0e-0d6f1b2c3a4e", "%00"]
)
def test_unknown_or_malformed_call_ids_are_404(api: APIClient, call_id: str) -> None:
    response = api.get(f"{CALLS}/{call_id}")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_reading_a_call_costs_constant_queries(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    call = CallFactory(organization=organization, completed=True)

    with django_assert_num_queries(3):  # API key + call (and its analysis) + latency samples
        assert api.get(f"{CALLS}/{call.id}").status_code == 200


def test_reading_an_analysed_call_costs_no_extra_query(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    call = CallFactory(organization=organization, completed=True)
    CallAnalysis.objects.create(call=call, provider="openai", status="completed")

    with django_assert_num_queries(3):
        assert api.get(f"{CALLS}/{call.id}").json()["analysis"]["status"] == "completed"


# --- GET /calls/{id}/transcript ------------------------------------------------------


def test_transcript_is_ordered_by_timestamp_then_arrival(api: APIClient, organization) -> None:
    call = CallFactory(organization=organization, completed=True)
    t0 = timezone.now().replace(microsecond=0)
    third = TranscriptEntryFactory(
        call=call,
        role="user",
        content="I'm doing well",
        timestamp=t0 + datetime.timedelta(seconds=10),
    )
    first = TranscriptEntryFactory(call=call, role="system", content="Call started", timestamp=t0)
    second_a = TranscriptEntryFactory(
        call=call, content="Hello!", timestamp=t0 + datetime.timedelta(seconds=5)
    )
    second_b = TranscriptEntryFactory(
        call=call,
        content="Great! What did you have for breakfast?",
        agent_name="meal-agent",
        timestamp=t0 + datetime.timedelta(seconds=5),
        tool_call={"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
        interrupted=True,
    )

    response = api.get(f"{CALLS}/{call.id}/transcript")

    assert response.status_code == 200
    assert response.json() == [
        {
            "role": "system",
            "content": "Call started",
            "timestamp": iso(t0),
            "agent_name": "greeter-agent",
            "sequence": first.id,
        },
        {
            "role": "assistant",
            "content": "Hello!",
            "timestamp": iso(t0 + datetime.timedelta(seconds=5)),
            "agent_name": "greeter-agent",
            "sequence": second_a.id,
            "interrupted": False,
        },
        {
            "role": "assistant",
            "content": "Great! What did you have for breakfast?",
            "timestamp": iso(t0 + datetime.timedelta(seconds=5)),
            "agent_name": "meal-agent",
            "sequence": second_b.id,
            "tool_call": {"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
            "interrupted": True,
        },
        {
            "role": "user",
            "content": "I'm doing well",
            "timestamp": iso(t0 + datetime.timedelta(seconds=10)),
            "agent_name": "greeter-agent",
            "sequence": third.id,
        },
    ]


def test_an_empty_transcript_is_an_empty_list(api: APIClient, organization) -> None:
    call = CallFactory(organization=organization)

    assert api.get(f"{CALLS}/{call.id}/transcript").json() == []


def test_transcript_costs_constant_queries(
    api: APIClient, organization, django_assert_num_queries
) -> None:
    call = CallFactory(organization=organization)
    TranscriptEntryFactory.create_batch(30, call=call)

    with django_assert_num_queries(3):  # API key + call + entries
        assert len(api.get(f"{CALLS}/{call.id}/transcript").json()) == 30


# --- GET /calls/{id}/metrics ---------------------------------------------------------

# Percentiles come from per-sample rows (tests/test_agent_events_api.py posts them);
# calls made by the factory have only the running sums.
NO_LATENCY_SAMPLES = {
    component: {"p50": None, "p95": None, "max": None, "count": 0}
    for component in ("stt", "llm", "tts", "e2e", "eou")
}


def test_metrics_are_means_of_samples_and_sums_of_tokens(api: APIClient, organization) -> None:
    started = timezone.now() - datetime.timedelta(minutes=5)
    call = CallFactory(
        organization=organization,
        status=CallStatus.COMPLETED,
        started_at=started,
        ended_at=started + datetime.timedelta(seconds=61.9),
        stt_latency_ms_sum=100 + 101,
        stt_latency_count=2,
        llm_latency_ms_sum=0,
        llm_latency_count=0,
        tts_latency_ms_sum=85,
        tts_latency_count=1,
        eou_latency_ms_sum=1001,
        eou_latency_count=2,
        e2e_latency_ms_sum=2100.6,
        e2e_latency_count=3,
        total_tokens=1500,
        agent_handoffs=2,
    )

    response = api.get(f"{CALLS}/{call.id}/metrics")

    assert response.json() == {
        "duration_seconds": 61,
        "stt_latency_ms": 100,  # 100.5 rounds half to even
        "llm_latency_ms": None,
        "tts_latency_ms": 85,
        "total_tokens": 1500,
        "agent_handoffs": 2,
        "eou_latency_ms": 500,  # 500.5 rounds half to even
        "e2e_latency_ms": 700,
        "latency": NO_LATENCY_SAMPLES,
        "providers": [],
    }


# --- POST /calls/{id}/token ----------------------------------------------------------


def test_a_call_not_yet_ended_gets_a_fresh_token(api: APIClient, organization) -> None:
    call = CallFactory(organization=organization, active=True)

    response = api.post(f"{CALLS}/{call.id}/token")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "call_id": str(call.id),
        "room_name": f"call-{call.id}",
        "livekit_url": "ws://localhost:7880",
        "token": body["token"],
        "status": "active",
        "channel": "web",
    }


def test_a_fresh_token_is_never_cached(api: APIClient, organization) -> None:
    call = CallFactory(organization=organization, active=True)

    response = api.post(f"{CALLS}/{call.id}/token")

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_an_ended_call_gets_no_token(api: APIClient, organization) -> None:
    call = CallFactory(organization=organization, completed=True)

    response = api.post(f"{CALLS}/{call.id}/token")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "call_ended"


def test_another_organizations_call_gets_no_token(
    api: APIClient, outsider_workflow: Workflow
) -> None:
    call = CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    assert api.post(f"{CALLS}/{call.id}/token").status_code == 404


def test_absurdly_nested_json_is_a_400_not_a_crash(api: APIClient, workflow: Workflow) -> None:
    body = '{"workflow_slug": "daily-call", "user_data": ' + "[" * 100_000 + "]" * 100_000 + "}"

    response = api.post(CALLS, body, content_type="application/json")

    assert response.status_code == 400
    assert Call.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_unknown_api_paths_are_a_json_404_for_every_method(method: str) -> None:
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"
