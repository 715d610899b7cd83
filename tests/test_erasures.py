"""Erasure: one user's personal data leaves every copy of the organization's calls
(transcript words, tool calls, user data, numbers, analysis, stored webhook bodies), in
batches; ids, statuses, timings and metrics stay, and nothing erased comes back. The
webhook bodies: tests/test_erasure_webhooks.py; runs and their leases:
tests/test_erasure_runs.py."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

import tests.privacy
from accounts.models import APIKey, Organization
from accounts.services import api_key_create
from analysis.models import CallAnalysis
from calls.lifecycle import call_transition
from calls.models import (
    ERASED_CONTENT,
    Call,
    CallStatus,
    IdempotencyRecord,
    TranscriptEntry,
    TranscriptRole,
)
from privacy.erasure import erasure_create, erasure_run
from privacy.keys import room_name_erased, user_id_hash
from privacy.models import Erasure, ErasureStatus
from tests.conftest import bearer_client
from tests.factories import TranscriptEntryFactory
from tests.fake_llm import FakeLLM, Outcome
from tests.privacy import (
    CALLEE,
    CALLER,
    OUR_NUMBER,
    inbound_phone_call,
    outbound_phone_call,
    personal_call,
    transcript,
)
from tests.test_analysis_run import VALID, ended_call
from tests.test_analysis_run import run_worker as run_analysis_worker

pytestmark = pytest.mark.django_db

# The shared fixture (tests/privacy.py), bound here for pytest to find.
key = tests.privacy.key

ERASED_LINES = [
    (TranscriptRole.USER, ERASED_CONTENT, None),
    (TranscriptRole.ASSISTANT, ERASED_CONTENT, None),
]


def erase(organization: Organization, key: APIKey, user_id: str, **run: object) -> Erasure:
    erasure = erasure_create(organization=organization, user_id=user_id, api_key=key)
    erasure_run(erasure_id=erasure.pk, **run)
    return Erasure.objects.get(pk=erasure.pk)


def kept(call: Call) -> dict:
    """What an erasure never changes."""
    call.refresh_from_db()
    fields = ("id", "status", "end_reason", "created_at", "started_at", "ended_at", "channel")
    return {**{name: getattr(call, name) for name in fields}, "metrics": call.metrics()}


def test_an_erasure_removes_the_users_data_and_keeps_ids_statuses_timings_and_metrics(
    organization, key
) -> None:
    call = personal_call(organization)
    before = kept(call)

    erasure = erase(organization, key, "user-123")

    assert transcript(call) == ERASED_LINES
    assert kept(call) == before
    call.refresh_from_db()
    assert (call.user_id, call.user_data, call.metadata) == (None, {}, {})
    assert call.erased_at is not None
    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.summary, analysis.structured_data, analysis.success) == (
        "completed",
        None,
        None,
        True,
    )
    assert erasure.status == ErasureStatus.COMPLETED
    assert (erasure.calls_matched, erasure.calls_erased, erasure.transcript_lines_erased) == (
        1,
        1,
        2,
    )
    assert erasure.finished_at is not None


def test_the_audit_record_keeps_who_asked_and_a_keyed_hash_never_the_user_id(
    organization, key, django_capture_on_commit_callbacks
) -> None:
    personal_call(organization)

    with django_capture_on_commit_callbacks(execute=True):
        erasure = erase(organization, key, "user-123")

    assert erasure.user_id is None
    assert erasure.user_id_hash == user_id_hash(organization_id=organization.pk, user_id="user-123")
    assert len(erasure.user_id_hash) == 64
    assert (erasure.requested_by_key_prefix, erasure.requested_by_key_name) == (
        key.prefix,
        "privacy-bot",
    )
    stored = json.dumps(list(Erasure.objects.values()), default=str)
    tasks = list(DBTaskResult.objects.values_list("args_kwargs", flat=True))
    assert tasks == [{"args": [str(erasure.pk)], "kwargs": {}}]
    assert "user-123" not in stored


def test_the_hash_differs_per_organization_and_per_secret(organization, outsider, settings):
    mine = user_id_hash(organization_id=organization.pk, user_id="user-123")
    theirs = user_id_hash(organization_id=outsider.pk, user_id="user-123")
    settings.SECRET_KEY = "another-secret-key-for-this-test-only"
    rotated = user_id_hash(organization_id=organization.pk, user_id="user-123")

    assert len({mine, theirs, rotated}) == 3


def test_other_users_and_other_organizations_calls_are_untouched(
    organization, outsider, key
) -> None:
    mine = personal_call(organization)
    someone_else = personal_call(organization, user_id="user-456")
    theirs = personal_call(outsider)

    erasure = erase(organization, key, "user-123")

    assert erasure.calls_erased == 1
    assert transcript(mine) == ERASED_LINES
    for call in (someone_else, theirs):
        call.refresh_from_db()
        assert call.erased_at is None
        assert call.user_data == {"name": "John Doe", "allergies": "peanuts"}
        assert [line[1] for line in transcript(call)] == ["I am John", "Saved your meal, John."]


def test_a_phone_number_erases_the_calls_to_and_from_it(organization, key) -> None:
    outbound = outbound_phone_call(organization, user_id="crm-42")
    inbound = inbound_phone_call(organization, user_id=CALLEE, from_number=CALLEE)
    someone_else = outbound_phone_call(organization, phone_number="+14155550199")
    room = inbound.room_name

    erasure = erase(organization, key, CALLEE)

    assert erasure.calls_erased == 2
    outbound.refresh_from_db()
    inbound.refresh_from_db()
    assert (outbound.user_id, outbound.phone_number, outbound.from_number) == (
        None,
        None,
        OUR_NUMBER,
    )
    assert (inbound.user_id, inbound.from_number, inbound.phone_number) == (None, None, OUR_NUMBER)
    assert (inbound.room_name, inbound.participant_identity) == (room_name_erased(room), None)
    someone_else.refresh_from_db()
    assert someone_else.erased_at is None


@pytest.mark.parametrize("rotated", [False, True], ids=["same-key", "secret-key-rotated"])
def test_an_erasure_reaches_the_words_of_calls_whose_identity_retention_removed(
    organization, key, settings, rotated: bool
) -> None:
    """Identities kept 30 days, transcripts longer: once retention cleared a call's user
    id and number, the user's words were out of an erasure's reach."""
    from privacy.models import RetainedIdentity
    from privacy.retention import retention_apply

    organization.user_data_retention_days = 30
    organization.save(update_fields=["user_data_retention_days"])
    month_ago = timezone.now() - datetime.timedelta(days=31)
    web = personal_call(organization, ended_at=month_ago)
    phone = outbound_phone_call(organization, user_id="crm-42", ended_at=month_ago)
    retention_apply()
    web.refresh_from_db()
    phone.refresh_from_db()
    assert (web.user_id, phone.phone_number) == (None, None)  # retention did its part
    assert "I am John" in [line[1] for line in transcript(web)]
    if rotated:
        settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
        settings.SECRET_KEY = "rotated-" + settings.SECRET_KEY

    by_user_id = erase(organization, key, "user-123")
    by_number = erase(organization, key, CALLEE)

    assert (by_user_id.status, by_number.status) == (ErasureStatus.COMPLETED,) * 2
    assert (by_user_id.calls_erased, by_number.calls_erased) == (1, 1)
    assert transcript(web) == ERASED_LINES
    assert all(line[1] == ERASED_CONTENT for line in transcript(phone))
    assert not RetainedIdentity.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("user_id", ["user-123", CALLEE])
def test_the_users_calls_are_found_through_their_indexes_not_a_scan_of_every_call(
    organization, user_id
) -> None:
    """The calls whose identity retention kept as a hash joined the lookup as an `IN
    (subquery)` arm of an OR, which no index serves: each batch of every erasure read
    the whole calls table, every organization's (155 ms at 150,000 calls)."""
    from privacy.erasure import _batch_rows, calls_of_user
    from tests.factories import CallFactory, WorkflowFactory

    workflow = WorkflowFactory(organization=organization)
    others = CallFactory.build_batch(2000, organization=organization, workflow=workflow)
    Call.objects.bulk_create(others)
    personal_call(organization, workflow=workflow)
    outbound_phone_call(organization, workflow=workflow)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE calls_call")
        # What a big table gets: with 2,000 rows a scan costs about the same.
        cursor.execute("SET LOCAL enable_seqscan = off")
    calls = calls_of_user(organization_id=organization.pk, user_id=user_id)
    plan = _batch_rows(calls).values_list("id", flat=True)[:500].explain()

    assert "BitmapOr" in plan  # one index per arm, the retained ids' through the key
    assert "Index Cond: (id = ANY" in plan


def test_the_organizations_own_number_is_nobodys_personal_number(organization, key) -> None:
    outbound_phone_call(organization)
    inbound_phone_call(organization)

    erasure = erase(organization, key, OUR_NUMBER)

    assert (erasure.status, erasure.calls_matched, erasure.calls_erased) == ("completed", 0, 0)
    assert not Call.objects.filter(erased_at__isnull=False).exists()


def test_an_open_call_is_erased_now_and_loses_its_numbers_when_it_ends(organization, key):
    call = inbound_phone_call(organization, open_call=True)
    now = timezone.now()

    erasure = erase(organization, key, CALLER, now=now)

    assert (erasure.status, erasure.calls_erased, erasure.calls_waiting) == ("running", 1, 1)
    assert transcript(call) == ERASED_LINES
    call.refresh_from_db()
    assert call.user_data == {}
    # Its room and LiveKit's webhooks still find it by these while it runs.
    assert call.from_number == CALLER
    room = call.room_name
    assert room.startswith(f"inbound-_{CALLER}_")
    assert erasure_run(erasure_id=erasure.pk, now=now + datetime.timedelta(minutes=1)) == "running"

    call_transition(call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
    status = erasure_run(erasure_id=erasure.pk, now=now + datetime.timedelta(minutes=2))

    assert status == ErasureStatus.COMPLETED
    call.refresh_from_db()
    assert (call.user_id, call.from_number, call.room_name) == (None, None, room_name_erased(room))
    erasure.refresh_from_db()
    assert (erasure.calls_erased, erasure.calls_waiting, erasure.user_id) == (1, 0, None)


def test_an_open_call_is_erased_in_a_batch_of_its_own_not_among_ended_calls(
    organization, key
) -> None:
    """A batch holds its calls' rows until it commits (2-4 s at 500 calls with their
    transcripts and reports): a live call taken among them had its agent's events,
    LiveKit's webhooks and transfers wait for all of it (4.2 s measured)."""
    ended = [personal_call(organization) for _ in range(3)]
    live = personal_call(organization, open_call=True)

    erasure = erase(organization, key, "user-123")

    assert (erasure.calls_erased, erasure.calls_waiting, erasure.batches) == (4, 1, 2)
    assert all(transcript(call) == ERASED_LINES for call in [*ended, live])


def test_a_batch_erases_at_most_its_line_budget_and_a_longer_call_goes_alone(
    organization, key
) -> None:
    """A batch's transaction (the calls' rows locked) took 500 calls whatever their
    lines: a user of long calls (5,000 lines each) had 2.5 million lines rewritten and
    their reports rebuilt while every one of those rows was held. Calls are taken in id
    order until their lines would pass `batch_lines`; a longer call goes alone, whole."""
    sizes = [4, 4, 4, 12, 2, 2, 2]
    calls = sorted((personal_call(organization) for _ in sizes), key=lambda call: call.pk)
    for call, size in zip(calls, sizes, strict=True):
        TranscriptEntryFactory.create_batch(size - 2, call=call)

    with CaptureQueriesContext(connection) as queries:
        erasure = erase(organization, key, "user-123", batch_lines=8)

    updates = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('UPDATE "calls_transcriptentry"')
    ]
    batches = [
        [
            size
            for call, size in zip(calls, sizes, strict=True)
            if call.pk.hex in sql.replace("-", "")
        ]
        for sql in updates
    ]
    assert batches == [[4, 4], [4], [12], [2, 2, 2]]
    assert (erasure.status, erasure.batches, erasure.calls_erased) == ("completed", 4, 7)
    assert erasure.transcript_lines_erased == 30
    assert not TranscriptEntry.objects.exclude(content=ERASED_CONTENT).exists()


def test_an_erasure_of_10000_calls_runs_in_batches_over_several_runs(organization, key):
    workflow = personal_call(organization).workflow
    calls = [
        Call(
            organization=organization,
            workflow=workflow,
            workflow_version_id=workflow.current_version_id,
            workflow_slug=workflow.slug,
            user_id="user-123",
            user_data={"name": "John Doe"},
            status=CallStatus.COMPLETED,
            ended_at=timezone.now(),
            connect_timeout_seconds=60,
            max_duration_seconds=1800,
        )
        for _ in range(9_999)
    ]
    Call.objects.bulk_create(calls, batch_size=1000)
    TranscriptEntry.objects.bulk_create(
        [
            TranscriptEntry(call=call, role="user", content="my secret", timestamp=timezone.now())
            for call in calls
        ],
        batch_size=1000,
    )
    bystander = personal_call(organization, user_id="user-456")

    erasure = erase(organization, key, "user-123", max_batches=8)
    assert (erasure.status, erasure.batches, erasure.calls_erased) == ("running", 8, 4000)
    while erasure_run(erasure_id=erasure.pk) != ErasureStatus.COMPLETED:
        pass

    erasure.refresh_from_db()
    assert (erasure.calls_matched, erasure.calls_erased, erasure.batches) == (10_000, 10_000, 20)
    assert erasure.transcript_lines_erased == 9_999 + 2
    assert not TranscriptEntry.objects.filter(content="my secret").exists()
    assert Call.objects.filter(user_id="user-123").count() == 0
    assert Call.objects.filter(erased_at__isnull=False).count() == 10_000
    assert len(transcript(bystander)) == 2 and transcript(bystander) != ERASED_LINES


def test_late_agent_events_for_an_erased_call_store_no_content(organization, key, agent_key):
    call = personal_call(organization)
    erase(organization, key, "user-123")
    line = {
        "id": str(uuid.uuid4()),
        "type": "transcript",
        "timestamp": timezone.now().isoformat(),
        "role": "assistant",
        "content": "Goodbye John, enjoy the peanut soup.",
        "agent_name": "greeter-agent",
        "tool_call": {"name": "save_meal", "arguments": {"meal": "peanut soup"}},
    }

    response = bearer_client(agent_key).post(
        f"/api/v1/agent/calls/{call.pk}/events", {"events": [line]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert transcript(call) == [*ERASED_LINES, (TranscriptRole.ASSISTANT, ERASED_CONTENT, None)]


def analysed_while_erased(organization, settings, key: APIKey, answer: Outcome) -> Call:
    """An ended call of user-123 whose analysis the provider answers (slowly) while the
    user is erased: the provider read the transcript before the erasure."""
    with FakeLLM(default=answer) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        settings.ANALYSIS_RETRY_BASE_SECONDS = 0
        call = ended_call(organization, name="Ada Lovelace")
        Call.objects.filter(pk=call.pk).update(user_id="user-123")

        def erase_while_the_provider_thinks() -> None:
            try:
                while not fake.requests:
                    threading.Event().wait(0.05)
                erase(organization, key, "user-123")
            finally:
                connection.close()

        eraser = threading.Thread(target=erase_while_the_provider_thinks)
        eraser.start()
        run_analysis_worker()
        eraser.join()
    return call


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_analysis_finishing_after_the_erasure_keeps_its_verdict_not_its_words(
    organization, settings
) -> None:
    """The provider read the transcript before the erasure and answers after it."""
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    call = analysed_while_erased(organization, settings, key, Outcome.answer(VALID, delay=1.5))

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.success) == ("completed", True)
    assert (analysis.summary, analysis.structured_data) == (None, None)
    assert Erasure.objects.get().status == ErasureStatus.COMPLETED


# The model answered structured data breaking the schema, quoting the caller: the failed
# analysis's error quotes it (jsonschema's message holds the value).
QUOTED = "Ada Lovelace of 12 Elm Street ate a salad"


def analysis_failed_quoting_the_caller(organization, settings) -> Call:
    wrong = {**VALID, "structured_data": {"meal_type": "lunch", "calories": QUOTED}}
    with FakeLLM(default=Outcome.answer(wrong)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        settings.ANALYSIS_RETRY_BASE_SECONDS = 0
        call = ended_call(organization, name="Ada Lovelace")
        run_analysis_worker()
    assert QUOTED in CallAnalysis.objects.get(call=call).error
    return call


@pytest.mark.django_db(transaction=True)
def test_an_erasure_clears_a_failed_analysis_error_that_quotes_the_caller(
    organization, settings
) -> None:
    call = analysis_failed_quoting_the_caller(organization, settings)
    Call.objects.filter(pk=call.pk).update(user_id="user-ada")
    key, _ = api_key_create(name="privacy-bot", organization=organization)

    erase(organization, key, "user-ada")

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.error) == ("failed", "[erased]")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_analysis_failing_after_the_erasure_keeps_no_error_quoting_the_caller(
    organization, settings
) -> None:
    """The erasure ran while the provider answered: the run's error was stored as the
    schema check wrote it, quoting the caller."""
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    wrong = {**VALID, "structured_data": {"meal_type": "lunch", "calories": QUOTED}}
    call = analysed_while_erased(organization, settings, key, Outcome.answer(wrong, delay=1.5))

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.error) == ("failed", "[erased]")
    assert Erasure.objects.get().status == ErasureStatus.COMPLETED


def test_the_token_kept_for_replays_of_the_calls_creation_loses_the_persons_name(
    organization, key, api, workflow
) -> None:
    """The token's claims carry user_data's name; a retry with the same key still gets
    its call (never a second one), with an empty token: the call has ended."""
    body = {"workflow_slug": "daily-call", "user_id": "user-123", "user_data": {"name": "Ada"}}
    first = api.post("/api/v1/calls", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    call_id = first.json()["call_id"]
    other = api.post(
        "/api/v1/calls", {**body, "user_id": "user-9"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )
    for created in (first, other):
        call_transition(
            call_id=created.json()["call_id"], to_status=CallStatus.FAILED, end_reason="error"
        )

    erase(organization, key, "user-123")
    replay = api.post("/api/v1/calls", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert (replay.status_code, replay.json()) == (201, {**first.json(), "token": ""})
    claims = first.json()["token"].split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(claims + "==="))["name"] == "Ada"  # was kept
    assert Call.objects.filter(organization=organization).count() == 2
    kept_for_replay = IdempotencyRecord.objects.get(key="k-2").response_body
    assert kept_for_replay == other.json() and kept_for_replay["token"]
    assert call_id != other.json()["call_id"]


def test_retention_clearing_a_call_while_an_erasure_runs_leaves_it_in_the_erasures_reach(
    organization, key, monkeypatch
) -> None:
    """Retention committing after the erasure found the user's calls (it clears the
    user id and keeps the hash at once) must not take a call out of its reach."""
    from privacy import erasure as erasure_module
    from privacy.retention import retention_apply

    organization.user_data_retention_days = 30
    organization.save(update_fields=["user_data_retention_days"])
    call = personal_call(organization, ended_at=timezone.now() - datetime.timedelta(days=31))
    found_calls_of_user = erasure_module.calls_of_user

    def calls_then_retention(**kwargs):
        calls = found_calls_of_user(**kwargs)
        retention_apply()  # expire_data's pass, committing meanwhile
        return calls

    monkeypatch.setattr(erasure_module, "calls_of_user", calls_then_retention)

    erasure = erase(organization, key, "user-123")

    assert erasure.status == ErasureStatus.COMPLETED
    assert transcript(call) == ERASED_LINES


@pytest.mark.django_db(transaction=True)
def test_an_erased_calls_analysis_is_not_rerun_on_its_erased_transcript(
    organization, key, api, settings
) -> None:
    """The erasure keeps the analysis's verdict; a re-run would ask the provider about a
    transcript of `[erased]` lines and replace the verdict with one about nothing."""
    with FakeLLM(default=Outcome.answer(VALID)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        settings.ANALYSIS_RETRY_BASE_SECONDS = 0
        call = ended_call(organization, name="Ada Lovelace")
        Call.objects.filter(pk=call.pk).update(user_id="user-123")
        run_analysis_worker()
        erase(organization, key, "user-123")
        fake.default = Outcome.answer({**VALID, "success": False})
        asked = len(fake.requests)

        response = api.post(f"/api/v1/calls/{call.pk}/analysis")
        run_analysis_worker()

        assert response.status_code == 409, response.json()
        assert len(fake.requests) == asked
    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.success, analysis.run) == ("completed", True, 1)


@pytest.mark.django_db(transaction=True)
def test_a_call_erased_before_its_analysis_ran_is_skipped_not_judged_on_erased_lines(
    organization, key, settings
) -> None:
    """The user is erased in the moments between the end and the analysis's run: nothing
    is left to judge, so nothing is asked of the customer's LLM (on their key)."""
    with FakeLLM(default=Outcome.answer({**VALID, "success": False})) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        settings.WEBHOOKS_END_REPORT_DELAY = 0
        call = ended_call(organization, name="Ada Lovelace")
        Call.objects.filter(pk=call.pk).update(user_id="user-123")
        erase(organization, key, "user-123")

        run_analysis_worker()

        assert fake.requests == []
    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.success) == ("skipped", None)
