"""The soak's invariants (soak/check.py) must be able to fail: each loss they are there
to catch, made here on purpose, is reported."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest

from soak import check
from tests.factories import CallFactory
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def endpoint(organization):
    endpoint, _ = webhook_endpoint_create(
        organization=organization,
        url="http://127.0.0.1:9/hooks",
        events=["call.status_changed", "call.ended"],
    )
    return endpoint


def record_of(call, *, talk_done_at: float = 0.0) -> dict:
    return {
        "call_id": str(call.pk),
        "n": 1,
        "plan": "user_hangup",
        "expected": ["completed", "user_hangup"],
        "lines": 0,
        "talk_done_at": talk_done_at,
    }


def received(call, type: str, *, to_status: str | None = None) -> dict:
    event_id = f"evt_{uuid.uuid4().hex}"
    entry = {
        "answer": 200,
        "verified": True,
        "id": event_id,
        "body_id": event_id,
        "type": type,
        "call_id": str(call.pk),
        "to_status": to_status,
    }
    if type == "call.ended":
        entry["lines"] = []
    return entry


def test_a_call_whose_status_changes_never_reached_the_receiver_is_a_violation(
    organization, workflow, endpoint
) -> None:
    """The events the outbox never wrote are in no table: "events lost" (the receiver
    against the WebhookEvent rows) cannot see them. The call's own history says which
    status changes its endpoint was owed: to `active` (it started), to its end."""
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    only_the_report = [received(call, "call.ended")]

    violations, _ = check._webhooks(organization.pk, [record_of(call)], only_the_report, 0.0)

    assert any("status change" in v and str(call.pk) in v for v in violations), violations


def test_a_call_whose_lines_came_after_its_end_still_needs_its_end_of_call_report(
    organization, workflow, endpoint
) -> None:
    """Lines sent after the end excuse a report that lacks them, not a report that never
    came: such calls were skipped whole, and their lost `call.ended` went unseen."""
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    talked_until = time.time() + 60  # the agent flushed lines after the end
    status_changes = [
        received(call, "call.status_changed", to_status="active"),
        received(call, "call.status_changed", to_status="completed"),
    ]

    violations, _ = check._webhooks(
        organization.pk, [record_of(call, talk_done_at=talked_until)], status_changes, 0.0
    )

    assert any("no end-of-call report" in v and str(call.pk) in v for v in violations), violations


def test_a_call_whose_every_event_was_received_passes(organization, workflow, endpoint) -> None:
    """The checks above pass a call that went through the real outbox, its every event
    received once."""
    from calls.lifecycle import call_transition
    from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent

    call = CallFactory(organization=organization, workflow=workflow)
    call_transition(call_id=call.pk, to_status="active")
    call_transition(call_id=call.pk, to_status="completed", end_reason="user_hangup")
    WebhookDelivery.objects.update(status=DeliveryStatus.SUCCEEDED)
    log = []
    for event in WebhookEvent.objects.filter(call_id=call.pk):
        entry = received(call, event.type, to_status=event.body and _to_status(event.body))
        log.append({**entry, "id": event.id, "body_id": event.id})

    violations, _ = check._webhooks(organization.pk, [record_of(call)], log, 0.0)

    assert violations == []


def _to_status(body: str) -> str | None:
    return json.loads(body)["data"].get("to_status")


def test_expire_calls_ending_calls_without_repairing_a_counter_is_no_violation(
    organization, workflow, fake_livekit, tmp_path
) -> None:
    """The soak reads `expire_calls`' own lines for repaired open-call counters. It took
    any line not ending in `open_counters_repaired=0` for a repair: since the line
    ends with `recordings_reconciled=…`, every pass that timed a call out (each soak run
    has its `connect_timeout` calls) was reported as one."""
    import datetime
    import io
    import types

    from django.core.management import call_command
    from django.utils import timezone

    from soak.__main__ import _expire_logs

    created = timezone.now() - datetime.timedelta(minutes=5)
    CallFactory(organization=organization, workflow=workflow, created_at=created)
    out = io.StringIO()
    call_command("expire_calls", stdout=out)
    assert "connect_timeout=1" in out.getvalue()
    (tmp_path / "expire_1.log").write_text(out.getvalue())

    assert _expire_logs(types.SimpleNamespace(work=tmp_path)) == []

    (tmp_path / "expire_2.log").write_text(out.getvalue().replace("repaired=0", "repaired=2"))
    assert len(_expire_logs(types.SimpleNamespace(work=tmp_path))) == 1


def test_a_keyed_create_whose_replay_was_refused_is_a_violation(organization, workflow) -> None:
    """A replay (the same Idempotency-Key and body) must answer the first call. One
    answered with an error carries no `call_id`: its `replayed` was None, the mark of a
    create never replayed, and the refusal went unseen."""
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    refused = {**record_of(call), "expected": [call.status, call.end_reason], "replayed": None}

    violations, _ = check._calls([refused], set(), 0.0)

    assert any("replay" in v and str(call.pk) in v for v in violations), violations


def test_a_call_whose_llm_or_tts_samples_were_miscounted_is_a_violation(
    organization, workflow
) -> None:
    """Metrics are exact in sums and counts: only the STT count was compared, so a
    sample counted twice for the LLM or the TTS passed."""
    call = CallFactory(
        organization=organization,
        workflow=workflow,
        completed=True,
        stt_latency_ms_sum=100,
        stt_latency_count=1,
        llm_latency_ms_sum=200,
        llm_latency_count=2,
        tts_latency_ms_sum=300,
        tts_latency_count=1,
    )
    sums = {"stt": 100, "llm": 200, "tts": 300, "tokens": 0, "samples": 1}
    record = {**record_of(call), "expected": [call.status, call.end_reason], "sums": sums}

    violations, _ = check._calls([record], set(), 0.0)

    assert any("metrics" in v and str(call.pk) in v for v in violations), violations


def test_a_livekit_webhook_answered_500_outside_the_fault_windows_is_a_violation() -> None:
    """LiveKit's webhooks are requests to the fleet too, but the soak's LiveKit retried
    a 5xx and kept nothing of it: a webhook handler failing (a deadlock's 500) outside
    every fault window passed once a retry got through."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from soak import report
    from soak.livekit import WebhookSender, webhook
    from soak.traffic import Record

    answers = [500, 200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(answers.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/webhooks/livekit"
        sender = WebhookSender(url=url, key="devkey", secret="secret", seed=1)
        record = Record()
        sender._deliver(webhook("room_finished", "call-x"))
    finally:
        server.shutdown()

    assert sender.stats["sent"] == 1 and answers == []
    failures = report.livekit_webhook_failures(sender.failures, started=record.started)
    violations, figures = report.server_errors(record, [], extra=failures)

    assert any("outside the fault windows" in v and "livekit_webhook 500" in v for v in violations)
    assert figures["5xx_or_no_answer"] == {"500": 1}


def _lines_sent(call, count: int) -> dict:
    """`count` lines as the soak's agent sends them for call number 1; the call's record."""
    import datetime

    from soak.scenario import content
    from tests.factories import TranscriptEntryFactory

    for index in range(count):
        TranscriptEntryFactory(
            call=call,
            role="user" if index % 2 else "assistant",
            content=content(1, index),
            timestamp=call.started_at + datetime.timedelta(milliseconds=index),
        )
    return {**record_of(call), "lines": count}


def _soak_webhook(call, event: str, identity: str, reason: str) -> None:
    """The soak's LiveKit's webhook (soak/livekit.py), through the real webhook view."""
    from soak.livekit import webhook
    from tests.livekit_samples import post_webhook

    body = webhook(event, f"call-{call.pk}", identity, reason=reason)
    assert post_webhook(json.dumps(body)).status_code == 200


def test_an_agent_lost_call_owes_every_line_sent_then_the_agents_departure_note(
    organization, workflow, fake_livekit
) -> None:
    """The `agent_lost` plan: the agent's participant leaves (SIGNAL_CLOSE) after its
    lines, the user hangs up after: `failed`/`agent_lost`, the transcript every line
    sent and then the system's note, word for word. Without the note, a violation."""
    from calls.models import TranscriptEntry
    from soak.scenario import AGENT_LOST_REASON, PLANS

    call = CallFactory(organization=organization, workflow=workflow, active=True)
    record = {**_lines_sent(call, 3), "plan": "agent_lost"}
    record["expected"] = list(PLANS["agent_lost"][1:])
    _soak_webhook(call, "participant_left", "agent-AJ_soak", AGENT_LOST_REASON)
    _soak_webhook(call, "participant_left", f"user-{call.pk}", "CLIENT_INITIATED")
    call.refresh_from_db()
    assert (call.status, call.end_reason) == ("failed", "agent_lost")

    assert check._calls([record], set(), 0.0)[0] == []

    TranscriptEntry.objects.filter(call=call, role="system").delete()
    violations, _ = check._calls([record], set(), 0.0)
    assert any("transcript not exactly once" in v and str(call.pk) in v for v in violations)


def test_an_agent_lost_call_that_livekit_lost_the_departure_of_is_checked_for_its_lines(
    organization, workflow, fake_livekit
) -> None:
    """LiveKit gave up on the agent's departure: the user's hang-up then completes the
    call (a tolerated other end), no note written; its lines are still owed, each."""
    from calls.models import TranscriptEntry
    from soak.scenario import PLANS

    call = CallFactory(organization=organization, workflow=workflow, active=True)
    record = {**_lines_sent(call, 3), "plan": "agent_lost"}
    record["expected"] = list(PLANS["agent_lost"][1:])
    _soak_webhook(call, "participant_left", f"user-{call.pk}", "CLIENT_INITIATED")
    call.refresh_from_db()
    assert (call.status, call.end_reason) == ("completed", "user_hangup")

    assert check._calls([record], {call.room_name}, 0.0)[0] == []

    TranscriptEntry.objects.filter(call=call).order_by("timestamp").first().delete()
    violations, _ = check._calls([record], {call.room_name}, 0.0)
    assert any("transcript not exactly once" in v and str(call.pk) in v for v in violations)


def test_an_agent_not_joined_call_owes_its_note_in_the_transcript_and_the_report(
    organization, workflow, endpoint, fake_livekit
) -> None:
    """The `agent_not_joined` plan: the user alone in the room, `expire_calls` fails the
    call once the agent is overdue, with its note; the end-of-call report must hold it
    too, word for word."""
    import datetime

    from django.core.management import call_command
    from django.utils import timezone

    from calls.lifecycle import call_transition
    from soak.scenario import PLANS
    from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent

    call = CallFactory(organization=organization, workflow=workflow)
    call_transition(call_id=call.pk, to_status="active")
    started = timezone.now() - datetime.timedelta(seconds=31)
    type(call).objects.filter(pk=call.pk).update(started_at=started)
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}"])
    call_command("expire_calls", stdout=io.StringIO())
    call.refresh_from_db()
    assert (call.status, call.end_reason) == ("failed", "agent_not_joined")
    record = {**record_of(call), "plan": "agent_not_joined"}
    record["expected"] = list(PLANS["agent_not_joined"][1:])

    assert check._calls([record], set(), 0.0)[0] == []

    WebhookDelivery.objects.update(status=DeliveryStatus.SUCCEEDED)
    log = []
    for event in WebhookEvent.objects.filter(call_id=call.pk):
        entry = received(call, event.type, to_status=event.body and _to_status(event.body))
        log.append({**entry, "id": event.id, "body_id": event.id})
    report = next(entry for entry in log if entry["type"] == "call.ended")
    report["lines"] = ["No agent joined the call within 30 seconds."]
    assert check._webhooks(organization.pk, [record], log, 0.0)[0] == []

    report["lines"] = []
    violations, _ = check._webhooks(organization.pk, [record], log, 0.0)
    assert any("report missing lines" in v and str(call.pk) in v for v in violations)
