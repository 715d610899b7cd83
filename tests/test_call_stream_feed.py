"""The stream's feed (streams.feed): every write numbers its events in its own
transaction, under the call's row lock, so the numbers follow commit order; on
PostgreSQL the call's channel is notified in that transaction; idle streams hold no
database connection."""

from __future__ import annotations

import threading
import time

import environ
import psycopg
import pytest
from django.db import connection, transaction

from calls.agent_events import agent_events_record
from calls.agent_events_api import AgentEventsBatchSerializer
from calls.lifecycle import call_transition
from calls.models import Call, CallStatus
from streams.feed import FeedEvent, call_events_append, channel_name
from streams.hub import _listen_params
from streams.models import CallEvent, CallEventType
from tests.factories import CallFactory
from tests.stream_server import asgi_server
from tests.test_agent_events_api import handoff, transcript

S = CallStatus


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


def recorded(call: Call, *events: dict) -> None:
    batch = AgentEventsBatchSerializer(data={"events": list(events)})
    batch.is_valid(raise_exception=True)
    agent_events_record(call_id=call.pk, events=batch.validated_data["events"])


def numbered(call: Call) -> list[tuple[int, str]]:
    return list(CallEvent.objects.filter(call=call).order_by("seq").values_list("seq", "type"))


def test_events_are_numbered_per_call_from_one(workflow, call):
    other = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    recorded(call, transcript(0), handoff("greeter-agent", "meal-agent"))
    recorded(other, transcript(0))
    call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
    assert numbered(call) == [(1, "transcript"), (2, "handoff"), (3, "status")]
    assert numbered(other) == [(1, "transcript")]
    assert Call.objects.get(pk=call.pk).stream_seq == 3


def test_a_transition_that_rolls_back_leaves_no_event(call):
    with pytest.raises(RuntimeError), transaction.atomic():
        call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
        raise RuntimeError
    assert numbered(call) == []
    assert Call.objects.get(pk=call.pk).stream_seq == 0


def test_a_transition_that_changes_nothing_adds_no_event(workflow):
    ended = CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    assert not call_transition(call_id=ended.pk, to_status=S.FAILED, end_reason="agent_error")
    assert numbered(ended) == []


def test_transcript_content_is_never_copied_into_the_feed(call):
    recorded(call, transcript(0, content="my card number is 4111"))
    [(ref_id, data)] = CallEvent.objects.filter(call=call).values_list("ref_id", "data")
    assert data is None
    assert call.transcript.get().pk == ref_id


def test_an_event_for_a_call_that_does_not_exist_is_not_stored(workflow):
    """The feed's rows have no foreign key in the database: the statement that numbers
    them moves the call's counter, and numbers nothing when there is no such call."""
    missing = CallFactory.build(organization=workflow.organization, workflow=workflow)
    with transaction.atomic():
        call_transition(call_id=missing.pk, to_status=S.COMPLETED, end_reason="user_hangup")
        call_events_append(call_id=missing.pk, events=[FeedEvent(CallEventType.STATUS, data={})])
    assert not CallEvent.objects.filter(call_id=missing.pk).exists()


def test_deleting_a_call_deletes_its_events(call):
    recorded(call, transcript(0), handoff("greeter-agent", "meal-agent"))
    assert CallEvent.objects.filter(call=call).count() == 2
    call.delete()
    assert not CallEvent.objects.filter(call_id=call.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_number_in_commit_order_without_gaps(workflow):
    """Batches and transitions of one call from many threads: numbers 1..n, each once,
    and a number never commits before a smaller one (a reader never skips)."""
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(5):
                recorded(call, transcript(worker * 10 + i), transcript(worker * 10 + i + 5))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    seen_max = []

    def watch() -> None:
        # What a stream reads while the writers run: always 1..max, never a hole.
        try:
            for _ in range(100):
                seqs = list(CallEvent.objects.filter(call=call).values_list("seq", flat=True))
                assert sorted(seqs) == list(range(1, len(seqs) + 1))
                seen_max.append(len(seqs))
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=watch))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [seq for seq, _ in numbered(call)] == list(range(1, 41))
    assert Call.objects.get(pk=call.pk).stream_seq == 40


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_each_write_notifies_the_calls_channel_with_its_last_id_on_commit(workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    with psycopg.connect(**_listen_params(), autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel_name(call.pk)}"')
        with transaction.atomic():
            recorded(call, transcript(0), transcript(1))
            assert list(listener.notifies(timeout=0.2)) == []  # not before the commit
        call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
        notes = [(n.channel, n.payload) for n in listener.notifies(timeout=1, stop_after=2)]
    assert notes == [(channel_name(call.pk), "2"), (channel_name(call.pk), "3")]


def test_the_listening_connection_keeps_every_libpq_parameter_of_the_url(settings):
    """A socket directory given as `?host=` (how scripts/with_postgres.sh and Cloud SQL
    name theirs) was dropped, so the LISTEN went to libpq's default socket and failed
    for ever: found by the soak, whose processes have no PGHOST to fall back on."""
    settings.DATABASE_LISTEN = environ.Env.db_url_config(
        "postgres://app:pw@/voicecalls?host=/run/pg&connect_timeout=3&sslmode=require"
    )
    settings.DATABASE_LISTEN["OPTIONS"]["prepare_threshold"] = None

    assert _listen_params() == {
        "dbname": "voicecalls",
        "user": "app",
        "password": "pw",
        "host": "/run/pg",
        "connect_timeout": 3,
        "sslmode": "require",
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_idle_streams_hold_one_listening_connection_and_nothing_else(
    workflow, client_key, settings
):
    import httpx

    settings.STREAMS_HEARTBEAT_SECONDS = 30
    calls = [
        CallFactory(organization=workflow.organization, workflow=workflow, active=True)
        for _ in range(5)
    ]

    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    with asgi_server() as base:
        before = backends()
        with httpx.Client(timeout=10) as client:
            streams = [
                client.stream(
                    "GET",
                    f"{base}/api/v1/calls/{c.pk}/stream",
                    headers={"Authorization": f"Bearer {client_key}"},
                )
                for c in calls * 4
            ]
            opened = [s.__enter__() for s in streams]
            try:
                assert all(r.status_code == 200 for r in opened)
                time.sleep(0.5)
                assert backends() == before + 1  # the hub's LISTEN connection
            finally:
                for s in streams:
                    s.__exit__(None, None, None)
