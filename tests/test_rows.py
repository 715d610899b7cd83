"""`ValuesStatement`: a `values()` queryset compiled once answers, for any value of its
one changing parameter, exactly what the ORM's queryset answers (as `active_calls`
reads the open calls, and `call_samples` a call's metric samples)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.utils import timezone

from calls.models import NOT_ENDED_STATUSES, Call, MetricSample
from calls.selectors import ACTIVE_FIELDS, NEWEST_FIRST, _active_calls_statement, active_calls
from tests.factories import CallFactory, OrganizationFactory, WorkflowFactory
from voicecalls.rows import ValuesStatement

pytestmark = pytest.mark.django_db

ORGANIZATION = Call._meta.get_field("organization").target_field


def _orm(organization_id: object, limit: int) -> list[dict]:
    return list(
        Call.objects.filter(organization_id=organization_id, status__in=NOT_ENDED_STATUSES)
        .order_by(*NEWEST_FIRST)
        .values(*ACTIVE_FIELDS)[:limit]
    )


def _calls_of_two_organizations() -> tuple:
    first, second = OrganizationFactory(), OrganizationFactory()
    for organization in (first, second):
        workflow = WorkflowFactory(organization=organization)
        CallFactory.create_batch(3, organization=organization, workflow=workflow)
        CallFactory(organization=organization, workflow=workflow, active=True)
        CallFactory(organization=organization, workflow=workflow, completed=True)
    return first, second


def test_one_statement_answers_as_the_orm_for_each_value_types_included() -> None:
    first, second = _calls_of_two_organizations()
    placeholder = uuid.UUID(int=0)
    statement = ValuesStatement(
        Call.objects.filter(organization_id=placeholder, status__in=NOT_ENDED_STATUSES)
        .order_by(*NEWEST_FIRST)
        .values(*ACTIVE_FIELDS)[:3],
        field=ORGANIZATION,
        placeholder=placeholder,
    )

    for organization in (first, second):
        found = statement.rows(organization.pk)
        assert found == _orm(organization.pk, 3)
        assert [type(row[name]) for row in found for name in ACTIVE_FIELDS] == [
            type(row[name]) for row in _orm(organization.pk, 3) for name in ACTIVE_FIELDS
        ]
        assert {row["workflow_id"] for row in found} <= set(
            organization.workflows.values_list("pk", flat=True)
        )
    assert statement.rows(str(uuid.uuid4())) == []


def test_active_calls_reads_through_it_the_orms_answer(django_assert_num_queries) -> None:
    first, _ = _calls_of_two_organizations()

    with django_assert_num_queries(1):
        found = active_calls(organization=first, limit=50)

    assert found == _orm(first.pk, 50)
    assert len(found) == 4  # three pending, one active; neither the ended one nor others'


def test_a_placeholder_that_is_not_one_of_its_parameters_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        ValuesStatement(
            Call.objects.filter(status="active").values("id"),
            field=ORGANIZATION,
            placeholder=uuid.UUID(int=0),
        )


def test_a_values_list_statement_reads_tuples_as_the_orm_json_included() -> None:
    first, second = _calls_of_two_organizations()
    calls = [first.calls.first(), second.calls.first()]
    for number, call in enumerate(calls):
        for turn in range(3):
            MetricSample.objects.create(
                call=call,
                event_id=uuid.uuid4(),
                turn_index=turn,
                stt_latency_ms=100 + turn,
                e2e_latency_ms=800.5 if turn else None,
                providers={"llm": {"provider": "openai", "model": f"m{number}"}},
                timestamp=timezone.now(),
            )
    placeholder = uuid.UUID(int=0)
    statement = ValuesStatement(
        MetricSample.objects.filter(call_id=placeholder)
        .order_by("id")
        .values_list("turn_index", "stt_latency_ms", "e2e_latency_ms", "providers"),
        field=MetricSample._meta.get_field("call").target_field,
        placeholder=placeholder,
    )

    for call in calls:
        expected = list(
            MetricSample.objects.filter(call=call)
            .order_by("id")
            .values_list("turn_index", "stt_latency_ms", "e2e_latency_ms", "providers")
        )
        assert statement.tuples(call.pk) == expected
        assert [type(v) for row in statement.tuples(call.pk) for v in row] == [
            type(v) for row in expected for v in row
        ]


@pytest.mark.postgres
def test_the_open_calls_statement_names_its_statuses_so_a_generic_plan_uses_their_index():
    """Prepared after five runs, the statement is planned once for any organization: with
    the statuses as parameters that plan could not use the partial index of open calls,
    and read an organization's every call (0.8 s at a million calls)."""
    statement = _active_calls_statement("postgresql", 50).statement
    assert statement.slots == (("value", None),)
    assert all(f"'{status}'" in statement.sql for status in NOT_ENDED_STATUSES)
    # An organization's calls, nearly all ended, as the planner's statistics say: on the
    # empty tables of a test run either index costs the same, and which one the plan
    # took depended on the tests run before.
    workflow = WorkflowFactory()
    Call.objects.bulk_create(
        CallFactory.build(organization=workflow.organization, workflow=workflow, completed=True)
        for _ in range(300)
    )

    text = statement.sql.replace("%s", "$1").replace("%%", "%")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE calls_call")
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"PREPARE open_calls_probe(uuid) AS {text}")
        try:
            cursor.execute(f"EXPLAIN EXECUTE open_calls_probe('{uuid.uuid4()}')")
            plan = "\n".join(line for (line,) in cursor.fetchall())
        finally:
            cursor.execute("DEALLOCATE open_calls_probe")

    assert "call_not_ended" in plan, plan
