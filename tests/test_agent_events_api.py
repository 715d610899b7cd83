from __future__ import annotations

import datetime
import threading
import uuid
from pathlib import Path

import pytest
import yaml
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calls.agent_events_api import (
    AgentEventsBatchSerializer,
    TranscriptEventSerializer,
    canonical_transcript_batch,
    canonical_transcript_line,
)
from calls.models import AgentEvent, Call, CallStatus, MetricSample, TranscriptEntry
from tests.conftest import bearer_client
from tests.factories import CallFactory

S = CallStatus
T0 = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)


def url(call_id: object) -> str:
    return f"/api/v1/agent/calls/{call_id}/events"


def ts(seconds: float) -> str:
    return (T0 + datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def transcript(n: int = 0, **extra: object) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "type": "transcript",
        "timestamp": ts(n),
        "role": "assistant",
        "content": f"line {n}",
        "agent_name": "greeter-agent",
        **extra,
    }


def metrics(**values: object) -> dict:
    return {"id": str(uuid.uuid4()), "type": "metrics", "timestamp": ts(1), **values}


def handoff(from_agent: str, to_agent: str, at: float = 2) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "type": "agent_handoff",
        "timestamp": ts(at),
        "from_agent": from_agent,
        "to_agent": to_agent,
    }


def status(value: str, reason: str | None = None, at: float = 3) -> dict:
    event = {"id": str(uuid.uuid4()), "type": "status", "timestamp": ts(at), "status": value}
    if reason:
        event["reason"] = reason
    return event


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


def _written(call: Call) -> tuple[int, int, int]:
    return (
        TranscriptEntry.objects.filter(call=call).count(),
        MetricSample.objects.filter(call=call).count(),
        AgentEvent.objects.filter(call=call).count(),
    )


def test_a_batch_is_recorded_and_counted(agent_api, api, call):
    events = [
        transcript(0, role="system", content="Call started"),
        transcript(1),
        transcript(2, role="user", content="Fine, thanks"),
        handoff("greeter-agent", "meal-agent"),
        transcript(
            4,
            agent_name="meal-agent",
            content="What did you have for breakfast?",
            tool_call={"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
        ),
        metrics(stt_latency_ms=100, llm_latency_ms=300, tts_latency_ms=80, tokens=500),
    ]
    response = agent_api.post(url(call.pk), {"events": events})
    assert response.status_code == 200, response.json()
    assert response.json() == {"accepted": 6, "duplicates": 0}
    call.refresh_from_db()
    assert call.agent_history == ["greeter-agent", "meal-agent"]
    assert call.current_agent == "meal-agent"
    assert call.agent_handoffs == 1

    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()
    assert [line["content"] for line in lines] == [
        "Call started",
        "line 1",
        "Fine, thanks",
        "What did you have for breakfast?",
    ]
    assert lines[3]["tool_call"] == {"name": "save_meal", "arguments": {"meal_type": "breakfast"}}
    assert "tool_call" not in lines[0]


def test_a_failed_tools_line_says_so_and_only_that_one(agent_api, api, call):
    """An agent dispatched again mid-call tells its model which tool answers were
    errors: the transcript keeps `is_error` on a failed call's line, and only there."""
    save = {"name": "save_meal", "arguments": {"meal_type": "lunch"}}
    events = [
        transcript(
            1,
            role="tool",
            content="save_meal failed (HTTP 500).",
            tool_call={**save, "is_error": True},
        ),
        transcript(2, role="tool", content='{"ok": true}', tool_call={**save, "is_error": False}),
        transcript(3, role="tool", content='{"ok": true}', tool_call=save),
    ]
    response = agent_api.post(url(call.pk), {"events": events})
    assert response.status_code == 200, response.json()

    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()
    assert [line["tool_call"] for line in lines] == [{**save, "is_error": True}, save, save]
    stored = TranscriptEntry.objects.filter(call=call).order_by("timestamp")
    assert [entry.tool_call for entry in stored] == [{**save, "is_error": True}, save, save]


@pytest.mark.parametrize("spelling", [str.upper, lambda text: text.replace("-", "")])
def test_the_agents_paths_take_every_spelling_of_the_call_id(agent_api, api, call, spelling):
    """As the customer's call paths do; Django's `uuid` converter took only one."""
    call_id = spelling(str(call.pk))

    session = agent_api.get(f"/api/v1/agent/calls/{call_id}/session")
    response = agent_api.post(url(call_id), {"events": [transcript(0)]})

    assert (session.status_code, response.status_code) == (200, 200)
    assert response.json() == {"accepted": 1, "duplicates": 0}
    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()
    assert [line["content"] for line in lines] == ["line 0"]


def test_the_agents_start_retried_past_the_connect_timeout_starts_the_call_when_stamped(
    agent_api, workflow
):
    """Retried through an outage (the join webhook lost), the agent's `active` arrived
    after the connect timeout: timed by its arrival, the call in progress timed out
    and its room was closed. It is timed by the agent's stamp, as a LiveKit join is."""
    now = timezone.now()
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        connect_timeout_seconds=60,
        created_at=now - datetime.timedelta(seconds=70),
    )
    started = now - datetime.timedelta(seconds=20)
    event = {**status("active"), "timestamp": started.isoformat()}

    assert agent_api.post(url(call.pk), {"events": [event]}).status_code == 200

    call.refresh_from_db()
    assert (call.status, call.started_at) == (S.ACTIVE, started)


def test_the_agents_start_stamped_past_the_connect_timeout_times_the_call_out(agent_api, workflow):
    now = timezone.now()
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        connect_timeout_seconds=60,
        created_at=now - datetime.timedelta(seconds=70),
    )
    event = {**status("active"), "timestamp": now.isoformat()}

    assert agent_api.post(url(call.pk), {"events": [event]}).status_code == 200

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.TIMEOUT, "connect_timeout")


def test_assistant_lines_carry_interrupted_and_no_other_line_has_it(agent_api, api, call):
    events = [
        transcript(0, content="Let me tell you about", interrupted=True),
        transcript(1, role="user", content="Stop", interrupted=True),
        transcript(2, content="Sure."),
        transcript(3, role="tool", content="{}", interrupted=None),
        transcript(4, content="And then", interrupted=False),
    ]
    assert agent_api.post(url(call.pk), {"events": events}).status_code == 200

    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()

    assert [(line["role"], line.get("interrupted", "absent")) for line in lines] == [
        ("assistant", True),
        ("user", "absent"),
        ("assistant", False),
        ("tool", "absent"),
        ("assistant", False),
    ]
    assert list(
        TranscriptEntry.objects.filter(call=call)
        .order_by("id")
        .values_list("interrupted", flat=True)
    ) == [True, False, False, False, False]


def test_an_interrupted_flag_that_is_not_a_boolean_is_400(agent_api, call):
    response = agent_api.post(url(call.pk), {"events": [transcript(0, interrupted="yes")]})

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "events.0.interrupted"
    assert _written(call) == (0, 0, 0)


def test_a_replayed_batch_changes_nothing(agent_api, api, call):
    events = [
        transcript(0),
        handoff("greeter-agent", "meal-agent"),
        metrics(stt_latency_ms=100, tokens=10),
        status("completed", "agent_hangup"),
    ]
    assert agent_api.post(url(call.pk), {"events": events}).json() == {
        "accepted": 4,
        "duplicates": 0,
    }
    first = api.get(f"/api/v1/calls/{call.pk}").json()
    assert first["status"] == "completed"
    replay = agent_api.post(url(call.pk), {"events": events})
    assert replay.json() == {"accepted": 0, "duplicates": 4}
    assert api.get(f"/api/v1/calls/{call.pk}").json() == first
    assert _written(call) == (1, 1, 2)


def test_a_partly_new_batch_counts_only_the_new_events(agent_api, call):
    old = [transcript(0), metrics(tokens=5)]
    agent_api.post(url(call.pk), {"events": old})
    response = agent_api.post(url(call.pk), {"events": [*old, transcript(1), metrics(tokens=7)]})
    assert response.json() == {"accepted": 2, "duplicates": 2}
    call.refresh_from_db()
    assert call.total_tokens == 12


def test_an_event_repeated_inside_a_batch_counts_once(agent_api, call):
    event = transcript(0)
    response = agent_api.post(url(call.pk), {"events": [event, event]})
    assert response.json() == {"accepted": 1, "duplicates": 1}


def test_metrics_are_the_means_and_sums_of_the_samples(agent_api, api, call):
    samples = [
        metrics(
            stt_latency_ms=100,
            llm_latency_ms=250,
            tts_latency_ms=80,
            e2e_latency_ms=700,
            tokens=300,
            agent_name="greeter-agent",
            turn_index=0,
        ),
        metrics(stt_latency_ms=141, llm_latency_ms=310, tokens=450, turn_index=1),
        metrics(stt_latency_ms=120.5, tts_latency_ms=91, e2e_latency_ms=900),
        metrics(tokens=250),
        metrics(eou_latency_ms=500.4, e2e_latency_ms=650.2),
        metrics(eou_latency_ms=301),
    ]
    agent_api.post(url(call.pk), {"events": samples})
    agent_api.post(url(call.pk), {"events": [handoff("greeter-agent", "meal-agent")]})
    body = api.get(f"/api/v1/calls/{call.pk}/metrics").json()
    expected_seed = {
        "stt_latency_ms": round((100 + 141 + 120.5) / 3),
        "llm_latency_ms": round((250 + 310) / 2),
        "tts_latency_ms": round((80 + 91) / 2),
        "total_tokens": 1000,
        "agent_handoffs": 1,
    }
    assert {k: body[k] for k in expected_seed} == expected_seed
    assert body["eou_latency_ms"] == round((500.4 + 301) / 2)
    assert body["e2e_latency_ms"] == round((700 + 900 + 650.2) / 3)
    assert body["latency"] == {
        "stt": {"p50": 120, "p95": 141, "max": 141, "count": 3},
        "llm": {"p50": 250, "p95": 310, "max": 310, "count": 2},
        "tts": {"p50": 80, "p95": 91, "max": 91, "count": 2},
        "e2e": {"p50": 700, "p95": 900, "max": 900, "count": 3},
        "eou": {"p50": 301, "p95": 500, "max": 500, "count": 2},
    }
    detail = api.get(f"/api/v1/calls/{call.pk}").json()
    assert detail["metrics"] == body


def test_metrics_without_samples_are_null_and_zero(api, call):
    body = api.get(f"/api/v1/calls/{call.pk}/metrics").json()
    assert body["stt_latency_ms"] is None
    assert body["eou_latency_ms"] is None and body["e2e_latency_ms"] is None
    assert body["providers"] == []
    assert body["total_tokens"] == 0
    assert body["agent_handoffs"] == 0
    assert body["latency"]["e2e"] == {"p50": None, "p95": None, "max": None, "count": 0}


def test_metrics_name_the_provider_that_served_each_turn(agent_api, api, call):
    openai = {"provider": "openai", "model": "gpt-4.1-mini"}
    anthropic = {"provider": "anthropic", "model": "claude-haiku"}
    deepgram = {"provider": "deepgram", "model": "nova-3"}
    samples = [
        metrics(llm_latency_ms=300, providers={"llm": openai, "stt": deepgram}),
        metrics(llm_latency_ms=310, providers={"llm": anthropic}),
        metrics(llm_latency_ms=320, providers={"llm": anthropic, "stt": deepgram}),
        metrics(tokens=5),
    ]
    assert agent_api.post(url(call.pk), {"events": samples}).status_code == 200

    body = api.get(f"/api/v1/calls/{call.pk}/metrics").json()

    assert body["providers"] == [
        {"component": "stt", "provider": "deepgram", "model": "nova-3", "turns": 2},
        {"component": "llm", "provider": "openai", "model": "gpt-4.1-mini", "turns": 1},
        {"component": "llm", "provider": "anthropic", "model": "claude-haiku", "turns": 2},
    ]


@pytest.mark.parametrize(
    ("providers", "attr"),
    [
        ({"llm": {"provider": "openai"}}, "events.0.providers.llm.model"),
        ({"llm": "openai"}, "events.0.providers.llm.non_field_errors"),
        ({"llm": {"provider": "o" * 51, "model": "m"}}, "events.0.providers.llm.provider"),
    ],
)
def test_a_malformed_providers_object_is_400(agent_api, call, providers, attr):
    response = agent_api.post(url(call.pk), {"events": [metrics(tokens=1, providers=providers)]})

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == attr


def test_handoffs_build_the_agent_history(agent_api, call):
    agent_api.post(
        url(call.pk),
        {
            "events": [
                handoff("meal-agent", "feedback-agent", at=9),
                handoff("greeter-agent", "meal-agent", at=5),
            ]
        },
    )
    call.refresh_from_db()
    assert call.agent_history == ["greeter-agent", "meal-agent", "feedback-agent"]
    assert call.current_agent == "feedback-agent"
    assert call.agent_handoffs == 2


def test_handoff_batches_that_cross_in_transit_still_leave_the_latest_agent_current(
    agent_api, call
):
    for batch in (
        [handoff("meal-agent", "feedback-agent", at=9)],
        [handoff("greeter-agent", "meal-agent", at=5)],
        [handoff("feedback-agent", "closing-agent", at=12)],
    ):
        assert agent_api.post(url(call.pk), {"events": batch}).status_code == 200

    call.refresh_from_db()
    assert call.agent_history == [
        "greeter-agent",
        "meal-agent",
        "feedback-agent",
        "closing-agent",
    ]
    assert (call.current_agent, call.agent_handoffs) == ("closing-agent", 3)


def test_a_handoff_arriving_after_a_later_one_on_an_ended_call_keeps_no_current_agent(
    agent_api, call
):
    agent_api.post(url(call.pk), {"events": [handoff("meal-agent", "feedback-agent", at=9)]})
    agent_api.post(url(call.pk), {"events": [status("completed", at=10)]})

    agent_api.post(url(call.pk), {"events": [handoff("greeter-agent", "meal-agent", at=5)]})

    call.refresh_from_db()
    assert call.agent_history == ["greeter-agent", "meal-agent", "feedback-agent"]
    assert (call.current_agent, call.agent_handoffs) == (None, 2)


def test_the_agent_reporting_active_starts_a_connecting_call(agent_api, workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    agent_api.post(
        url(call.pk), {"events": [status("active"), handoff("greeter-agent", "meal-agent")]}
    )
    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.started_at is not None
    assert call.agent_history == ["greeter-agent", "meal-agent"]
    assert call.current_agent == "meal-agent"


@pytest.mark.parametrize(
    ("value", "reason", "end_reason"),
    [
        ("completed", None, "agent_hangup"),
        ("completed", "user_hangup", "user_hangup"),
        ("failed", None, "agent_error"),
        ("disconnected", None, "connection_lost"),
        ("timeout", "max_duration", "max_duration"),
    ],
)
def test_the_agent_ends_the_call(agent_api, call, value, reason, end_reason):
    agent_api.post(url(call.pk), {"events": [status(value, reason)]})
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (value, end_reason)
    assert call.current_agent is None


def test_transcript_and_metrics_are_accepted_after_the_end(agent_api, api, call):
    agent_api.post(url(call.pk), {"events": [status("completed")]})
    call.refresh_from_db()
    ended = (call.status, call.ended_at)
    response = agent_api.post(
        url(call.pk),
        {
            "events": [
                transcript(9, content="Goodbye!"),
                metrics(llm_latency_ms=200, tokens=40),
                handoff("greeter-agent", "feedback-agent"),
                status("active"),
            ]
        },
    )
    assert response.json() == {"accepted": 4, "duplicates": 0}
    call.refresh_from_db()
    assert (call.status, call.ended_at) == ended
    assert call.current_agent is None
    assert call.agent_history == ["greeter-agent", "feedback-agent"]
    assert api.get(f"/api/v1/calls/{call.pk}/metrics").json()["total_tokens"] == 40
    assert api.get(f"/api/v1/calls/{call.pk}/transcript").json()[-1]["content"] == "Goodbye!"


def _bad(events: list, index: int, **change: object) -> list:
    events = [dict(e) for e in events]
    for key, value in change.items():
        if value is ...:
            events[index].pop(key)
        else:
            events[index][key] = value
    return events


GOOD = [transcript(0), metrics(stt_latency_ms=1), handoff("a", "b"), status("completed")]


@pytest.mark.parametrize(
    ("events", "attr"),
    [
        (_bad(GOOD, 1, type="weather"), "events.1.type"),
        (_bad(GOOD, 1, type=...), "events.1.type"),
        (_bad(GOOD, 0, id=...), "events.0.id"),
        (_bad(GOOD, 2, id="not-a-uuid"), "events.2.id"),
        (_bad(GOOD, 3, timestamp="yesterday"), "events.3.timestamp"),
        (_bad(GOOD, 0, timestamp=...), "events.0.timestamp"),
        (_bad(GOOD, 0, role="narrator"), "events.0.role"),
        (_bad(GOOD, 0, content=...), "events.0.content"),
        (_bad(GOOD, 0, tool_call={"arguments": {}}), "events.0.tool_call.name"),
        (_bad(GOOD, 1, stt_latency_ms=-1), "events.1.stt_latency_ms"),
        (_bad(GOOD, 1, stt_latency_ms=600_001), "events.1.stt_latency_ms"),
        (_bad(GOOD, 1, tokens=-5), "events.1.tokens"),
        (_bad(GOOD, 1, stt_latency_ms=...), "events.1.non_field_errors"),
        (_bad(GOOD, 2, to_agent=...), "events.2.to_agent"),
        (_bad(GOOD, 3, status="pending"), "events.3.status"),
        (_bad(GOOD, 3, reason="Not A Slug"), "events.3.reason"),
        ([*GOOD[:2], "text"], "events.2"),
        ([], "events"),
        ([transcript(i) for i in range(501)], "events"),
    ],
)
def test_a_bad_event_rejects_the_whole_batch(agent_api, call, events, attr):
    response = agent_api.post(url(call.pk), {"events": events})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert attr in [error["attr"] for error in body["errors"]], body
    assert _written(call) == (0, 0, 0)
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def test_a_batch_of_500_is_accepted(agent_api, call):
    response = agent_api.post(url(call.pk), {"events": [transcript(i) for i in range(500)]})
    assert response.json() == {"accepted": 500, "duplicates": 0}


def test_an_unknown_call_is_404(agent_api, db):
    response = agent_api.post(url(uuid.uuid4()), {"events": GOOD})

    assert response.status_code == 404
    assert response.json() == {
        "type": "client_error",
        "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}],
    }
    assert TranscriptEntry.objects.count() == 0


def test_an_organization_key_cannot_reach_another_organizations_call(
    org_agent_api, outsider_workflow
):
    call = CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)
    assert org_agent_api.post(url(call.pk), {"events": GOOD}).status_code == 404
    assert _written(call) == (0, 0, 0)
    call.refresh_from_db()
    assert call.last_event_at is None


def test_an_organization_key_reaches_its_own_calls(org_agent_api, call):
    assert org_agent_api.post(url(call.pk), {"events": GOOD}).status_code == 200


def test_every_batch_notes_when_the_agent_last_reported_a_replayed_one_too(agent_api, call):
    batch = {"events": [transcript(0)]}
    before = timezone.now()
    agent_api.post(url(call.pk), batch)
    call.refresh_from_db()
    first = call.last_event_at

    response = agent_api.post(url(call.pk), batch)

    call.refresh_from_db()
    assert response.json() == {"accepted": 0, "duplicates": 1}
    assert before <= first < call.last_event_at <= timezone.now()


def test_a_client_key_is_403(api, call):
    assert api.post(url(call.pk), {"events": GOOD}).status_code == 403
    assert _written(call) == (0, 0, 0)


def test_no_key_is_401(anonymous_api, call):
    assert anonymous_api.post(url(call.pk), {"events": GOOD}).status_code == 401


@pytest.mark.parametrize("size", [1, 50, 500])
def test_queries_do_not_grow_with_the_batch(agent_api, call, size, django_assert_num_queries):
    events = []
    for i in range(size):
        maker = [
            transcript,
            lambda i: metrics(stt_latency_ms=i, tokens=i),
            lambda i: handoff("a", f"agent-{i}"),
        ][i % 3]
        events.append(maker(i))
    # auth (2), the call found, locked and its report time noted in one, three inserts
    # (one skipped when there is nothing of its kind), the live stream's feed
    # (streams.feed: one statement on PostgreSQL, an UPDATE and an INSERT on SQLite),
    # the aggregate UPDATE (none for transcript lines only), savepoint-free atomic block;
    # with handoffs, whether a stored one is later (batches that crossed in transit).
    feed = 1 if connection.vendor == "postgresql" else 2
    expected = (9 if size >= 3 else 5) + feed
    with django_assert_num_queries(expected):
        response = agent_api.post(url(call.pk), {"events": events})
    assert response.json()["accepted"] == size


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_and_webhooks_count_everything_once(agent_key, workflow):
    from tests.livekit_samples import send

    call = CallFactory(organization=workflow.organization, workflow=workflow)
    lines = [transcript(i) for i in range(120)]
    samples = [metrics(stt_latency_ms=10 + i, tokens=i + 1) for i in range(60)]
    handoffs = [
        handoff("greeter-agent", "meal-agent"),
        handoff("meal-agent", "feedback-agent", at=4),
    ]
    everything = lines + samples + handoffs
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            client = bearer_client(agent_key)
            barrier.wait()
            # Overlapping windows: every event is sent by several threads.
            for start in range(n * 7 % 40, len(everything), 40):
                batch = everything[start : start + 60]
                response = client.post(url(call.pk), {"events": batch})
                assert response.status_code == 200, response.content
            if n % 2:
                send("participant_joined", call.pk)
            ending = ["CLIENT_INITIATED", "CONNECTION_TIMEOUT", "ROOM_DELETED"][n % 3]
            send("participant_left", call.pk, reason=ending)
            client.post(url(call.pk), {"events": [status("completed", at=99)]})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    call.refresh_from_db()
    assert TranscriptEntry.objects.filter(call=call).count() == 120
    assert MetricSample.objects.filter(call=call).count() == 60
    assert call.stt_latency_count == 60
    assert call.stt_latency_ms_sum == sum(10 + i for i in range(60))
    assert call.total_tokens == sum(i + 1 for i in range(60))
    assert call.agent_handoffs == 2
    assert call.agent_history[-2:] == ["meal-agent", "feedback-agent"]
    assert call.status in (S.COMPLETED, S.DISCONNECTED, S.FAILED)
    assert call.ended_at is not None
    assert call.current_agent is None


def test_the_agent_completing_a_call_hung_up_through_the_api_keeps_api_request(agent_api, call):
    Call.objects.filter(pk=call.pk).update(
        hangup_requested_at=call.started_at, end_reason="api_request"
    )
    agent_api.post(url(call.pk), {"events": [status("completed")]})
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "api_request")


# --- Events ids are unique per call -------------------------------------------------------


def test_an_event_id_used_on_another_call_is_a_new_event_there(agent_api, call, workflow):
    other = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    line, sample = transcript(1), metrics(stt_latency_ms=100)

    first = agent_api.post(url(call.pk), {"events": [line, sample]})
    second = agent_api.post(url(other.pk), {"events": [line, sample]})

    assert first.json() == second.json() == {"accepted": 2, "duplicates": 0}
    assert _written(call) == _written(other) == (1, 1, 0)


def test_a_status_handoff_or_usage_id_used_on_another_call_is_new_there_and_once(
    agent_api, call, workflow
):
    other = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    usage = {
        "id": str(uuid.uuid4()),
        "type": "usage",
        "timestamp": ts(2),
        "usage": [{"component": "tts", "provider": "cartesia", "model": "sonic-2"}],
    }
    batch = [handoff("greeter-agent", "meal-agent"), usage, status("completed")]
    assert agent_api.post(url(call.pk), {"events": batch}).json() == {
        "accepted": 3,
        "duplicates": 0,
    }

    first = agent_api.post(url(other.pk), {"events": batch})
    replay = agent_api.post(url(other.pk), {"events": batch})

    assert first.json() == {"accepted": 3, "duplicates": 0}
    assert replay.json() == {"accepted": 0, "duplicates": 3}
    other.refresh_from_db()
    assert (other.status, other.end_reason, other.agent_handoffs) == (
        S.COMPLETED,
        "agent_hangup",
        1,
    )
    assert AgentEvent.objects.filter(call=other).count() == 3


# --- The canonical-line check agrees with the serializer -------------------------------
# agent_events_api.canonical_transcript_line takes a transcript line already in canonical
# form without DRF's field machinery; TranscriptEventSerializer stays the judge. For any
# input the check either declines (None) or returns exactly the serializer's data.

_ID = "0b6e7a3c-3c1f-4b8e-9a55-1f0c5e2d9a10"
_PLAIN = {"id": _ID, "type": "transcript", "timestamp": "2026-01-17T10:30:00Z", "role": "user"}


def _serializer_result(event: object) -> dict | None:
    if not isinstance(event, dict):
        return None
    serializer = TranscriptEventSerializer(data=event)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def _assert_agrees(event: object) -> dict | None:
    line = canonical_transcript_line(event, timezone.get_current_timezone())
    expected = _serializer_result(event)
    if line is not None:
        assert line == expected
        # Same instant is not enough: the same time zone and spelling too.
        assert str(line["timestamp"]) == str(expected["timestamp"])
        assert list(line) == list(expected)
    return line


@pytest.mark.parametrize(
    "changes",
    [
        {"content": "Hello"},
        {"content": ""},
        {"content": "héllo wörld ✓"},
        {"content": "Hello", "agent_name": "greeter-agent"},
        {"content": "Hello", "agent_name": None},
        {"content": "Hello", "tool_call": None},
        {"content": "Hello", "tool_call": {"name": "save_meal", "arguments": {"n": 1.5}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": True}},
        {"content": "Hello", "role": "assistant", "interrupted": True},
        {"content": "Hello", "role": "assistant", "interrupted": False},
        {"content": "Hello", "interrupted": None},
        {"content": "Hello", "id": _ID.upper()},
        {"content": "Hello", "timestamp": "2026-01-17T12:30:00.123456+02:00"},
        {"content": "x" * 65536},
    ],
)
def test_the_canonical_check_accepts_canonical_lines_as_the_serializer_does(changes):
    assert _assert_agrees({**_PLAIN, **changes}) is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"content": "Hello", "id": _ID.replace("-", "")},  # valid, but not canonical
        {"content": "Hello", "id": f"urn:uuid:{_ID}"},
        {"content": "Hello", "id": 12345},
        {"content": "Hello", "id": "not-a-uuid"},
        {"content": "Hello", "timestamp": "2026-01-17T10:30:00"},  # naive
        {"content": "Hello", "timestamp": "2026-01-17"},
        {"content": "Hello", "timestamp": "9999-12-31T23:59:59-05:00"},  # overflows UTC
        {"content": "Hello", "timestamp": "yesterday"},
        {"content": "Hello", "timestamp": 1768645800},
        {"content": "Hello", "agent_name": " greeter "},  # the serializer strips it
        {"content": "Hello", "agent_name": ""},
        {"content": "Hello", "agent_name": "   "},
        {"content": "Hello", "agent_name": "a" * 101},
        {"content": "Hello", "agent_name": 7},
        {"content": "nul \x00 inside"},
        {"content": "lone \ud800 surrogate"},
        {"content": "x" * 65537},
        {"content": 42},
        {"content": None},
        {"content": "Hello", "role": "robot"},
        {"content": "Hello", "type": "metrics"},
        {"content": "Hello", "extra": "ignored by the serializer"},
        {"content": "Hello", "tool_call": {"name": " save ", "arguments": {}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": []}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": None}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "id": "x"}},
        # false is valid but left out of what is kept
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": False}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": None}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": 1}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": "true"}},
        {"content": "Hello", "tool_call": {"name": "s" * 65, "arguments": {}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {"a": "\x00"}}},
        {"content": "Hello", "tool_call": "save"},
        {"content": "Hello", "interrupted": 1},
        {"content": "Hello", "interrupted": "true"},
    ],
)
def test_the_canonical_check_leaves_everything_else_to_the_serializer(changes):
    assert _assert_agrees({**_PLAIN, **changes}) is None


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_short_names = st.text(min_size=1, max_size=12)
# Values the serializer mostly accepts, and values it mostly refuses.
_usual_values = {
    "id": st.uuids().map(str),
    "type": st.just("transcript"),
    "timestamp": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    "role": st.sampled_from(["user", "assistant", "system", "tool"]),
    "content": st.text(max_size=30),
    "agent_name": st.none() | _short_names,
    "tool_call": st.none()
    | st.fixed_dictionaries(
        {"name": _short_names, "arguments": st.dictionaries(st.text(max_size=3), _json_scalars)},
        optional={"is_error": st.booleans()},
    ),
    "interrupted": st.none() | st.booleans(),
}
_odd_values = {
    "id": st.sampled_from([_ID.upper(), _ID[:-1], _ID.replace("-", ""), "", 1]),
    "type": st.sampled_from(["metrics", "Transcript", None]),
    "timestamp": st.datetimes().map(lambda d: d.isoformat()) | _json_scalars,
    "role": _json_scalars,
    "content": _json_scalars,
    "agent_name": _json_scalars | st.text(max_size=3).map(" {} ".format),
    "tool_call": _json_scalars
    | st.fixed_dictionaries(
        {"name": _json_scalars, "arguments": _json_scalars}, optional={"is_error": _json_scalars}
    ),
    "interrupted": _json_scalars,
}
_REQUIRED = ("id", "type", "timestamp", "role", "content")


def _events(values: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {k: values[k] for k in _REQUIRED},
        optional={k: v for k, v in values.items() if k not in _REQUIRED},
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events(_usual_values))
def test_the_canonical_check_gives_the_serializers_data_for_generated_lines(event):
    _assert_agrees(event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events({k: v | _odd_values[k] for k, v in _usual_values.items()}))
def test_the_canonical_check_never_disagrees_with_the_serializer(event):
    _assert_agrees(event)


# Lines the canonical check exists for: storable text, names without surrounding blanks.
_storable = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
_bare_names = _storable.map(str.strip).filter(lambda name: 0 < len(name) <= 12)
_fast_values = {
    **_usual_values,
    "content": _storable,
    "agent_name": st.none() | _bare_names,
    "tool_call": st.none()
    | st.fixed_dictionaries(
        {"name": _bare_names, "arguments": st.dictionaries(_bare_names, _json_scalars)},
        optional={"is_error": st.just(True)},
    ),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events(_fast_values))
def test_the_canonical_check_takes_every_canonical_line_the_serializer_takes(event):
    """Without this the agreement tests above pass for a check that declines everything."""
    if _serializer_result(event) is not None:
        assert _assert_agrees(event) is not None


def _batch_result(data: object) -> list[dict] | None:
    serializer = AgentEventsBatchSerializer(data=data)
    return serializer.validated_data["events"] if serializer.is_valid() else None


def test_a_batch_of_canonical_lines_gets_the_serializers_events():
    data = {"events": [{**_PLAIN, "id": str(uuid.uuid4()), "content": f"{i}"} for i in range(500)]}

    assert canonical_transcript_batch(data) == _batch_result(data)


@pytest.mark.parametrize(
    "data",
    [
        {"events": []},
        {"events": [{**_PLAIN, "content": "x", "id": str(uuid.uuid4())} for _ in range(501)]},
        {"events": [{**_PLAIN, "content": "x"}, {**_PLAIN, "content": "x", "role": "robot"}]},
        {"events": [{**_PLAIN, "content": "x"}, metrics(tokens=3)]},
        {"events": [{**_PLAIN, "content": "x"}], "extra": 1},
        {"events": {"0": {**_PLAIN, "content": "x"}}},
        [{**_PLAIN, "content": "x"}],
    ],
)
def test_any_other_batch_is_left_to_the_serializer(data):
    assert canonical_transcript_batch(data) is None


def test_an_agent_start_stamped_before_the_call_existed_proves_nothing_past_the_timeout(
    agent_api, workflow
):
    """An `active` stamped 10 minutes before the call was even created is a skewed
    clock, not proof the start came in time: arriving past the connect timeout, the
    call timed out (as before e143c0c), not started at its creation."""
    now = timezone.now()
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        connect_timeout_seconds=60,
        created_at=now - datetime.timedelta(seconds=70),
    )
    skewed = now - datetime.timedelta(minutes=10)
    event = {**status("active"), "timestamp": skewed.isoformat()}

    assert agent_api.post(url(call.pk), {"events": [event]}).status_code == 200

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.TIMEOUT, "connect_timeout")


def test_a_timestamp_without_an_offset_is_utc_and_the_schema_says_so(agent_api, call):
    line = {**transcript(), "timestamp": "2026-01-17T10:30:00"}

    assert agent_api.post(url(call.pk), {"events": [line]}, format="json").status_code == 200

    (stored,) = TranscriptEntry.objects.filter(call=call).values_list("timestamp", flat=True)
    assert stored == datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)
    schema = yaml.safe_load((Path(django_settings.BASE_DIR) / "openapi.yaml").read_text())
    described = schema["components"]["schemas"]["TranscriptEventRequest"]["properties"]["timestamp"]
    assert "without an offset it is UTC" in described["description"]
