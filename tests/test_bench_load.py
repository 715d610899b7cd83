"""The bench's data generator inserts rows by hand (bench/load_sql.py): each statement must
still fit the tables as migrated, or `make bench` breaks at its step."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest
from django.db import connection

from billing.models import CallCost
from billing.services import call_usage_record
from calls.models import MetricSample
from tests.factories import CallFactory

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

T0 = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)


def test_the_bench_prices_its_calls_as_the_stack_keeps_them(workflow) -> None:
    """`usage_sessions` came without a database default: every row was refused."""
    from bench.load_sql import COST_BREAKDOWN, COST_USAGE, COSTS_SQL

    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=3),
    )
    with connection.cursor() as cursor:
        cursor.execute(COSTS_SQL, {"usage": COST_USAGE, "breakdown": COST_BREAKDOWN})
    loaded = CallCost.objects.get(call=call)
    # A late report of a session adds to what the bench's row holds, as to a row kept
    # before sessions were.
    call_usage_record(
        call_id=call.pk, session="run-2", usage=loaded.usage, at=T0 + datetime.timedelta(hours=1)
    )

    assert len(CallCost.objects.get(call=call).usage_sessions) == 2


def test_the_bench_s_cost_lines_hold_the_fields_the_stack_writes() -> None:
    """The bench compares each body with its floor's, which renders the stored lines as
    they are: lines without a field the stack now writes (`phase`) broke the detail's
    scenario."""
    import json

    from bench.load_sql import COST_BREAKDOWN, COST_USAGE
    from billing.cost import call_cost_compute
    from billing.prices import platform_prices

    cost = call_cost_compute(
        usage=json.loads(COST_USAGE),
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=3),
        prices=platform_prices(),
    )
    written = {frozenset(line) for line in cost.breakdown}
    assert {frozenset(line) for line in json.loads(COST_BREAKDOWN)} == written


@pytest.mark.django_db(transaction=True)
def test_the_bench_s_floor_builds_the_call_detail_the_api_answers(workflow, api) -> None:
    """`bench.runner` refuses to time a floor whose body differs from the stack's: the
    detail's floor must follow every field the detail shows (here the agent's presence
    and `end_reason_detail`). Its own connection, as the bench's: Django's hands jsonb
    over as text."""
    from bench import floor

    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=3),
        agent_joined_at=T0 + datetime.timedelta(seconds=2),
        agent_left_at=T0 + datetime.timedelta(minutes=2),
        end_reason_detail="LiveKit unreachable",
    )
    with _floor_connection() as conn:
        body = floor.call_detail(
            conn, organization_id=str(workflow.organization_id), call_id=str(call.pk)
        )

    assert json.loads(body) == api.get(f"/api/v1/calls/{call.pk}").json()


@pytest.mark.django_db(transaction=True)
def test_the_bench_s_floor_builds_the_call_metrics_the_api_answers(workflow, api) -> None:
    """As the detail's: the metrics' floor gives the body `GET /calls/{id}/metrics` does,
    its samples' percentiles and providers included, or the bench refuses to time it."""
    from bench import floor

    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=3),
        stt_latency_ms_sum=360,
        stt_latency_count=3,
        total_tokens=1234,
        agent_handoffs=1,
    )
    for n, (stt, e2e) in enumerate([(100, 700.5), (120, None), (140, 950)]):
        MetricSample.objects.create(
            call=call,
            event_id=uuid.uuid4(),
            stt_latency_ms=stt,
            e2e_latency_ms=e2e,
            providers={"stt": {"provider": "deepgram", "model": f"nova-{n % 2 + 2}"}},
            timestamp=T0 + datetime.timedelta(seconds=n),
        )

    with _floor_connection() as conn:
        body = floor.call_metrics(
            conn, organization_id=str(workflow.organization_id), call_id=str(call.pk)
        )

    answer = api.get(f"/api/v1/calls/{call.pk}/metrics")
    assert body == answer.content
    assert json.loads(body)["latency"]["stt"] == {"p50": 120, "p95": 140, "max": 140, "count": 3}


def _floor_connection():
    """A connection of the bench's own to the test database (`floor.connect`'s settings;
    Django's hands jsonb over as text)."""
    import psycopg

    params = connection.settings_dict
    names = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST"}
    conn = psycopg.connect(
        **{key: params[name] for key, name in names.items() if params[name]},
        port=params["PORT"] or None,
        autocommit=True,
    )
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def test_the_bench_s_calls_have_both_directions_and_end_reasons_the_list_filters_take() -> None:
    """The list's `direction` and `end_reason` filters are measured on the loaded calls:
    a failed call's `join_failed` was no end reason the platform records, and no call
    ended as a campaign's do (`voicemail`, `no_answer`, `busy`)."""
    from bench.load import CALLS_SQL, _cast
    from calls.lifecycle import END_REASONS

    _cast()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE calls_call ALTER room_name DROP NOT NULL")
        cursor.execute(CALLS_SQL, {"calls": 5000})
        cursor.execute("SELECT DISTINCT direction, end_reason FROM calls_call")
        loaded = cursor.fetchall()
    reasons = {reason for _, reason in loaded if reason is not None}

    assert {direction for direction, _ in loaded} == {"inbound", "outbound"}
    assert reasons <= set(END_REASONS), reasons - set(END_REASONS)
    assert {("outbound", "voicemail"), ("outbound", "no_answer"), ("outbound", "busy")} <= set(
        loaded
    )
