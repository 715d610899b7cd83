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
