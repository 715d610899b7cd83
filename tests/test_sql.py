"""`insert_instance`: the plain INSERT behind `POST /calls` stores what the ORM's
`save()` stores, on both databases."""

from __future__ import annotations

import uuid

import pytest
from django.db.models import signals
from django.utils import timezone

from calls.models import Call, CallDirection, CallStatus, TranscriptEntry, TranscriptRole
from calls.sql import insert_instance
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
