"""`insert_instance`: the plain INSERT behind `POST /calls` stores what the ORM's
`save()` stores, on both databases; `insert_new_ids`, the agent batches' insert, stores
each new row once as given and answers its key."""

from __future__ import annotations

import datetime
import uuid

import psycopg
import pytest
from django.db import connection
from django.db.models import signals
from django.utils import timezone

from calls.models import Call, CallDirection, CallStatus, TranscriptEntry, TranscriptRole
from calls.sql import insert_instance, insert_new_ids
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


def _call(workflow: Workflow, **fields: object) -> Call:
    return Call(
        organization=workflow.organization,
        workflow=workflow,
        workflow_version=workflow.current_version,
        workflow_slug=workflow.slug,
        status=CallStatus.CONNECTING,
        connect_timeout_seconds=45,
        max_duration_seconds=900,
        **fields,
    )


def _stored(call_id: uuid.UUID) -> dict:
    row = Call.objects.filter(pk=call_id).values().get()
    assert row["room_name"] == f"call-{call_id}"
    del row["id"], row["created_at"], row["room_name"]
    return row


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"user_id": None, "user_data": {}, "metadata": {}},
        {
            "user_id": "ünïcode-user ✓",
            "user_data": {"name": "Zoë", "nested": {"list": [1, 2.5, None, True]}, "empty": ""},
            "metadata": {"quote": 'it\'s "quoted"', "emoji": "📞", "n": 10**15},
            "direction": CallDirection.OUTBOUND,
        },
    ],
)
def test_it_stores_what_save_stores(workflow: Workflow, fields: dict) -> None:
    by_orm = _call(workflow, **fields)
    by_orm.save(force_insert=True)
    by_insert = _call(workflow, **fields)

    insert_instance(by_insert)

    assert _stored(by_insert.pk) == _stored(by_orm.pk)


def test_it_sets_created_at_and_marks_the_instance_saved(workflow: Workflow) -> None:
    call = _call(workflow)

    insert_instance(call)

    stored = Call.objects.get(pk=call.pk)
    assert call.created_at is not None
    assert stored.created_at == call.created_at
    assert call._state.adding is False
    assert call._state.db == "default"


def test_it_takes_one_query(workflow: Workflow, django_assert_num_queries) -> None:
    call = _call(workflow)

    with django_assert_num_queries(1):
        insert_instance(call)


@pytest.mark.postgres
def test_on_postgresql_it_is_sent_as_written_not_rewritten_by_psycopg(workflow: Workflow) -> None:
    # psycopg rewrites `%s` statements of over 50 parameters on every execution, uncached.
    assert len(Call._meta.local_concrete_fields) > 50
    cursors = []

    def record_cursor(execute, sql, params, many, context):
        cursors.append(context["cursor"].cursor)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record_cursor):
        insert_instance(_call(workflow))

    assert [isinstance(cursor, psycopg.RawCursor) for cursor in cursors] == [True]


def test_a_model_whose_database_assigns_the_key_is_refused(workflow: Workflow) -> None:
    call = _call(workflow)
    insert_instance(call)
    entry = TranscriptEntry(
        call=call, role=TranscriptRole.USER, content="hi", timestamp=timezone.now()
    )

    with pytest.raises(ValueError, match="primary key set in Python"):
        insert_instance(entry)
    assert not TranscriptEntry.objects.exists()


def test_no_signals_are_connected_to_the_models_it_inserts() -> None:
    # insert_instance sends none; a receiver added later would silently miss new calls.
    for signal in (signals.pre_save, signals.post_save):
        assert not signal.has_listeners(Call)


def _lines(call: Call, count: int, **same: object) -> list[dict]:
    """`count` transcript rows that differ in every column but those in `same`."""
    start = timezone.now()
    rows = [
        {
            "call": call.pk,
            "event_id": uuid.uuid4(),
            "role": (TranscriptRole.USER, TranscriptRole.ASSISTANT)[i % 2],
            "content": f"line {i}",
            "agent_name": f"agent-{i}",
            "tool_call": {"name": "save", "arguments": {"n": i}} if i % 2 else None,
            "interrupted": bool(i % 2),
            "timestamp": start + datetime.timedelta(seconds=i),
            "created_at": start + datetime.timedelta(milliseconds=i),
        }
        for i in range(count)
    ]
    return [{**row, **same} for row in rows]


def _stored_lines(call: Call) -> list[dict]:
    columns = [f.name for f in TranscriptEntry._meta.concrete_fields if f.name != "id"]
    return list(TranscriptEntry.objects.filter(call=call).order_by("id").values(*columns))


@pytest.mark.parametrize(
    "same",
    [
        {},
        # Sent once rather than as a column of equal values, on PostgreSQL.
        {"role": TranscriptRole.TOOL, "content": "same", "agent_name": None, "tool_call": None},
        {"interrupted": False, "timestamp": timezone.now(), "created_at": timezone.now()},
    ],
    ids=["every column differs", "text and JSON alike", "flags and times alike"],
)
@pytest.mark.parametrize("count", [1, 3])
def test_new_rows_are_stored_in_order_as_given_and_answered_with_their_keys(
    workflow: Workflow, same: dict, count: int
) -> None:
    call = _call(workflow)
    insert_instance(call)
    rows = _lines(call, count, **same)

    inserted = insert_new_ids(TranscriptEntry, rows, unique="event_id", unique_with=("call",))

    assert _stored_lines(call) == rows
    keys = dict(TranscriptEntry.objects.filter(call=call).values_list("event_id", "id"))
    assert inserted == keys
    assert list(inserted) == [row["event_id"] for row in rows]


def test_rows_already_stored_are_not_inserted_again_nor_answered(workflow: Workflow) -> None:
    call = _call(workflow)
    insert_instance(call)
    first = _lines(call, 2, agent_name="greeter")
    insert_new_ids(TranscriptEntry, first, unique="event_id", unique_with=("call",))
    again = [*first, *_lines(call, 1, agent_name="greeter")]

    inserted = insert_new_ids(TranscriptEntry, again, unique="event_id", unique_with=("call",))

    assert list(inserted) == [again[2]["event_id"]]
    assert _stored_lines(call) == again
