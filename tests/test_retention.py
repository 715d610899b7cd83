"""Retention: `expire_data` deletes transcripts and clears who the caller was once an
organization's retention has passed since the call ended, in batches, never on an open
call."""

from __future__ import annotations

import datetime
import io
import json
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organization
from accounts.services import api_key_create
from analysis.models import CallAnalysis
from calls.models import Call, CallStatus
from privacy.erasure import erasure_create, erasure_run
from privacy.keys import room_name_erased
from privacy.retention import retention_apply
from tests.factories import CallFactory, TranscriptEntryFactory, WorkflowFactory
from tests.privacy import (
    CALLEE,
    CALLER,
    OUR_NUMBER,
    inbound_phone_call,
    outbound_phone_call,
    personal_call,
    transcript,
)
from webhooks import outbox, services
from webhooks.models import EventType, WebhookEvent

pytestmark = pytest.mark.django_db

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)


def retain(organization: Organization, **days: int | None) -> None:
    Organization.objects.filter(pk=organization.pk).update(**days)


def kept_as_it_was(call: Call) -> dict:
    """What retention never changes: ids, status, timings, metrics."""
    call.refresh_from_db()
    return {
        "id": call.id,
        "status": call.status,
        "end_reason": call.end_reason,
        "created_at": call.created_at,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "metrics": call.metrics(),
    }


def test_a_transcript_is_deleted_once_its_retention_has_passed_since_the_end(organization):
    retain(organization, transcript_retention_days=30)
    due = personal_call(organization, ended_at=NOW - 30 * DAY)
    not_yet = personal_call(organization, ended_at=NOW - 30 * DAY + SECOND)
    before = kept_as_it_was(due)

    result = retention_apply(now=NOW)

    assert (result.transcripts_expired, result.transcript_lines_deleted) == (1, 2)
    assert transcript(due) == []
    assert kept_as_it_was(due) == before
    due.refresh_from_db()
    assert due.transcript_expired_at == NOW
    # Who the caller was is another setting's business.
    assert (due.user_id, due.user_data) == (
        "user-123",
        {"name": "John Doe", "allergies": "peanuts"},
    )
    analysis = CallAnalysis.objects.get(call=due)
    assert (analysis.summary, analysis.structured_data, analysis.success) == (None, None, True)
    assert len(transcript(not_yet)) == 2
    assert CallAnalysis.objects.get(call=not_yet).summary == "John ate peanut soup."


def test_open_calls_are_never_touched_however_old(organization) -> None:
    retain(organization, transcript_retention_days=1, user_data_retention_days=1)
    open_call = personal_call(
        organization, open_call=True, created_at=NOW - 400 * DAY, started_at=NOW - 400 * DAY
    )

    result = retention_apply(now=NOW)

    assert result.batches == 0
    open_call.refresh_from_db()
    assert len(transcript(open_call)) == 2
    assert open_call.user_data == {"name": "John Doe", "allergies": "peanuts"}
    assert open_call.transcript_expired_at is open_call.user_data_expired_at is None


def test_user_data_past_retention_clears_the_user_but_keeps_the_transcript(organization):
    retain(organization, user_data_retention_days=7)
    call = personal_call(organization, ended_at=NOW - 7 * DAY)
    before = kept_as_it_was(call)

    result = retention_apply(now=NOW)

    assert result.user_data_expired == 1
    call.refresh_from_db()
    assert (call.user_id, call.user_data, call.metadata) == (None, {}, {})
    assert call.user_data_expired_at == NOW
    assert kept_as_it_was(call) == before
    assert len(transcript(call)) == 2
    assert CallAnalysis.objects.get(call=call).summary is None


def test_the_persons_number_goes_and_the_organizations_own_number_stays(organization):
    retain(organization, user_data_retention_days=7)
    outbound = outbound_phone_call(organization, ended_at=NOW - 8 * DAY)
    inbound = inbound_phone_call(organization, ended_at=NOW - 8 * DAY)

    room = inbound.room_name

    retention_apply(now=NOW)

    outbound.refresh_from_db()
    inbound.refresh_from_db()
    assert (outbound.phone_number, outbound.from_number) == (None, OUR_NUMBER)
    assert (inbound.phone_number, inbound.from_number, inbound.user_id) == (OUR_NUMBER, None, None)
    # LiveKit named the room and the caller's participant after the caller's number.
    assert inbound.room_name == room_name_erased(room)
    assert inbound.participant_identity is None
    assert CALLER not in json.dumps(list(Call.objects.values()), default=str)
    assert CALLEE not in json.dumps(list(Call.objects.values()), default=str)


def test_a_room_an_erasure_renamed_keeps_that_name_when_retention_comes(organization):
    """Renamed twice, a late webhook for the room would no longer find its call."""
    retain(organization, user_data_retention_days=7)
    inbound = inbound_phone_call(organization, ended_at=NOW - 8 * DAY)
    room = inbound.room_name
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    erasure = erasure_create(organization=organization, user_id=CALLER, api_key=key)
    erasure_run(erasure_id=erasure.pk, now=NOW)

    retention_apply(now=NOW)

    inbound.refresh_from_db()
    assert inbound.user_data_expired_at == NOW
    assert inbound.room_name == room_name_erased(room)


def test_organizations_without_retention_keep_everything(organization, outsider) -> None:
    retain(organization, transcript_retention_days=1)
    theirs = personal_call(outsider, ended_at=NOW - 3000 * DAY)

    assert retention_apply(now=NOW).batches == 0
    assert len(transcript(theirs)) == 2


def test_a_pass_works_in_batches_and_a_second_pass_redoes_nothing(organization) -> None:
    retain(organization, transcript_retention_days=1)
    calls = [personal_call(organization, ended_at=NOW - 2 * DAY - n * SECOND) for n in range(7)]

    first = retention_apply(now=NOW, batch_size=3)
    second = retention_apply(now=NOW + DAY, batch_size=3)

    assert (first.batches, first.transcripts_expired, first.transcript_lines_deleted) == (3, 7, 14)
    assert second.batches == 0
    assert set(Call.objects.values_list("transcript_expired_at", flat=True)) == {NOW}
    assert all(transcript(call) == [] for call in calls)


def test_a_batch_holds_at_most_its_line_budget_and_a_longer_call_goes_alone(
    organization,
) -> None:
    """A batch's transaction (the calls' rows locked) deletes at most `batch_lines`
    transcript lines: calls are taken in order until theirs would pass it; a call longer
    than that is a batch of its own, whole (never half its transcript)."""
    retain(organization, transcript_retention_days=1)
    sizes = [4, 4, 4, 12, 2, 2, 2]
    calls = [personal_call(organization, ended_at=NOW - 2 * DAY + n * SECOND) for n in range(7)]
    for call, size in zip(calls, sizes, strict=True):
        TranscriptEntryFactory.create_batch(size - 2, call=call)

    with CaptureQueriesContext(connection) as queries:
        result = retention_apply(now=NOW, batch_lines=8)

    deletes = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "calls_tr')
    ]
    batches = [
        [
            size
            for call, size in zip(calls, sizes, strict=True)
            if call.pk.hex in sql.replace("-", "")
        ]
        for sql in deletes
    ]
    assert batches == [[4, 4], [4], [12], [2, 2, 2]]
    assert (result.batches, result.transcripts_expired, result.transcript_lines_deleted) == (
        4,
        7,
        30,
    )
    assert all(transcript(call) == [] for call in calls)


def test_a_batch_of_many_short_calls_is_bounded_by_its_lines_too(organization) -> None:
    retain(organization, transcript_retention_days=1)
    for _ in range(40):
        call = CallFactory(organization=organization, completed=True, ended_at=NOW - 2 * DAY)
        TranscriptEntryFactory.create_batch(2, call=call)

    result = retention_apply(now=NOW, batch_lines=50)

    # 25 calls of 2 lines, then the 15 left.
    assert (result.batches, result.transcripts_expired, result.transcript_lines_deleted) == (
        2,
        40,
        80,
    )
    assert Call.objects.filter(transcript_expired_at=None).count() == 0


def test_a_pass_after_a_crash_continues_with_the_calls_not_yet_marked(organization) -> None:
    """Each batch commits with its mark: the calls a crashed pass finished are skipped."""
    retain(organization, transcript_retention_days=1)
    calls = [personal_call(organization, ended_at=NOW - 2 * DAY) for _ in range(4)]
    done_before = NOW - DAY
    Call.objects.filter(pk__in=[c.pk for c in calls[:2]]).update(transcript_expired_at=done_before)

    result = retention_apply(now=NOW)

    assert result.transcripts_expired == 2
    assert [len(transcript(call)) for call in calls] == [2, 2, 0, 0]
    expired_at = [Call.objects.get(pk=c.pk).transcript_expired_at for c in calls]
    assert expired_at == [done_before, done_before, NOW, NOW]


def test_stored_webhook_bodies_lose_what_retention_removed(organization) -> None:
    retain(organization, transcript_retention_days=1, user_data_retention_days=1)
    services.webhook_endpoint_create(
        organization=organization, url="http://127.0.0.1:9/hook", events=[EventType.CALL_ENDED]
    )
    call = personal_call(organization, ended_at=NOW - 2 * DAY)
    outbox.call_status_changed_record(
        call_id=call.pk,
        from_status=CallStatus.ACTIVE,
        to_status=CallStatus.COMPLETED,
        end_reason="user_hangup",
        at=NOW - 2 * DAY,
    )
    event = WebhookEvent.objects.get()
    frozen = json.loads(outbox.event_body(event))
    assert frozen["data"]["transcript"] != []

    result = retention_apply(now=NOW)

    assert result.webhook_events_scrubbed == 2  # one per retention step
    event.refresh_from_db()
    body = json.loads(event.body)
    assert {k: body[k] for k in ("id", "type", "timestamp")} == {
        k: frozen[k] for k in ("id", "type", "timestamp")
    }
    assert body["data"]["transcript"] == []
    assert body["data"]["call"]["user_id"] is None
    assert body["data"]["call"]["user_data"] == body["data"]["call"]["metadata"] == {}
    assert body["data"]["call"]["analysis"]["summary"] is None
    assert body["data"]["metrics"] == frozen["data"]["metrics"]
    assert "John" not in event.body


def test_expire_data_runs_a_pass_and_says_what_it_did(organization) -> None:
    retain(organization, transcript_retention_days=1)
    personal_call(organization, ended_at=timezone.now() - 2 * DAY)
    out = io.StringIO()

    call_command("expire_data", stdout=out)

    assert out.getvalue() == (
        "transcripts_expired=1 transcript_lines_deleted=2 user_data_expired=0 "
        "webhook_events_scrubbed=0 recordings_deleted=0 recording_storages_failed=0 "
        "batches=1 webhook_deliveries_pruned=0 webhook_events_pruned=0 erasures_woken=0\n"
    )


def test_expire_data_refuses_a_period_that_is_not_positive() -> None:
    with pytest.raises(CommandError, match="--every must be a positive number"):
        call_command("expire_data", "--every", "0")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_passes_expire_each_call_once(organization) -> None:
    retain(organization, transcript_retention_days=1)
    for _ in range(30):
        personal_call(organization, ended_at=NOW - 2 * DAY)
    barrier = threading.Barrier(3)
    results = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(retention_apply(now=NOW, batch_size=4))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r.transcripts_expired for r in results) == 30
    assert sum(r.transcript_lines_deleted for r in results) == 60
    assert not Call.objects.filter(transcript_expired_at__isnull=True).exists()


@pytest.mark.postgres
def test_retention_reads_its_partial_indexes(organization) -> None:
    """The job's queries can be served in order by their partial indexes, a range of the
    calls still due. Seq scans and sorts are disallowed so the planner shows the ordered
    index path a big table gets: with a few rows due, an index scan plus a sort costs
    about the same, and the choice between them was a coin toss (two CI runs failed)."""
    retain(organization, transcript_retention_days=1)
    workflow = WorkflowFactory(organization=organization)
    expired = CallFactory.build_batch(
        2000,
        organization=organization,
        workflow=workflow,
        completed=True,
        ended_at=NOW - 90 * DAY,
        transcript_expired_at=NOW - DAY,
        user_data_expired_at=NOW - DAY,
    )
    Call.objects.bulk_create(expired)
    for _ in range(5):
        personal_call(organization, workflow=workflow, ended_at=NOW - 2 * DAY)
    due = Call.objects.filter(
        organization=organization,
        ended_at__lte=NOW,
        status__in=["completed"],
        transcript_expired_at__isnull=True,
    ).order_by("ended_at")[:500]
    user_due = Call.objects.filter(
        organization=organization, ended_at__lte=NOW, user_data_expired_at__isnull=True
    ).order_by("ended_at")[:500]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE calls_call")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    assert "call_transcript_retention" in due.explain()
    assert "call_user_data_retention" in user_due.explain()


@pytest.mark.django_db(transaction=True)
def test_transcript_retention_clears_a_failed_analysis_error_that_quotes_the_caller(
    organization, settings
) -> None:
    from tests.test_erasures import analysis_failed_quoting_the_caller

    call = analysis_failed_quoting_the_caller(organization, settings)
    Organization.objects.filter(pk=organization.pk).update(transcript_retention_days=1)

    retention_apply(now=timezone.now() + datetime.timedelta(days=2))

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.error) == ("failed", "[erased]")


def test_the_kept_identity_goes_once_the_words_it_was_kept_for_are_gone(organization) -> None:
    """User data kept 7 days, transcripts 30: the keyed hashes kept at day 7 (so an
    erasure still reaches the words) have nothing left to reach at day 30."""
    from privacy.models import RetainedIdentity

    retain(organization, user_data_retention_days=7, transcript_retention_days=30)
    call = personal_call(organization, ended_at=NOW - 7 * DAY)
    retention_apply(now=NOW)
    assert RetainedIdentity.objects.filter(call=call).exists()  # kept for the words

    retention_apply(now=NOW + 30 * DAY)

    assert transcript(call) == []
    assert not RetainedIdentity.objects.filter(call=call).exists()


def test_no_identity_is_kept_when_nothing_is_kept_longer(organization) -> None:
    from privacy.models import RetainedIdentity

    retain(organization, user_data_retention_days=7, transcript_retention_days=7)
    personal_call(organization, ended_at=NOW - 8 * DAY)

    retention_apply(now=NOW)

    assert not RetainedIdentity.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rerun_after_the_user_data_went_keeps_what_it_read_in_the_kept_transcript(
    organization, api, settings
) -> None:
    """User data may go sooner than the transcript. A re-run then reads the transcript
    still kept and a prompt without the data that went: nothing of it is left to remove,
    so its summary and structured data are the customer's to read, not nulled."""
    from tests.fake_llm import FakeLLM, Outcome
    from tests.test_analysis_run import VALID, ended_call
    from tests.test_analysis_run import run_worker as run_analysis_worker

    retain(organization, user_data_retention_days=7)
    rerun = {**VALID, "summary": "The caller logged lunch."}
    with FakeLLM(default=Outcome.answer(VALID)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        call = ended_call(organization, name="Ada Lovelace")
        run_analysis_worker()
        Call.objects.filter(pk=call.pk).update(ended_at=timezone.now() - 8 * DAY)
        assert retention_apply().user_data_expired == 1
        fake.default = Outcome.answer(rerun)

        response = api.post(f"/api/v1/calls/{call.pk}/analysis")
        run_analysis_worker()

        assert response.status_code == 202, response.json()
        assert "Ada" not in fake.requests[-1].messages[0]["content"]  # the prompt
    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.run, analysis.summary, analysis.structured_data) == (
        "completed",
        2,
        rerun["summary"],
        rerun["structured_data"],
    )
