"""`call_get`: the one plain statement behind `GET /calls/{id}` answers exactly
what the ORM's `select_related` query answers, its one-to-ones included or absent."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from analysis.models import CallAnalysis
from billing.models import CallCost
from calls.models import Call
from calls.selectors import DETAIL_RELATED, call_get
from tests.factories import CallFactory, RecordingFactory

pytestmark = pytest.mark.django_db


def _fields(instance: object) -> dict:
    return {
        field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields
    }


def _orm(call: Call) -> Call:
    return Call.objects.select_related(*DETAIL_RELATED).get(pk=call.pk)


def test_a_call_with_its_analysis_cost_and_recording_reads_back_as_the_orm_reads_it(
    organization, workflow
) -> None:
    at = timezone.now() - datetime.timedelta(minutes=5)
    call = CallFactory(
        organization=organization,
        workflow=workflow,
        completed=True,
        metadata={"crm": "Zoë ✓", "n": [1, 2]},
        user_data={"name": "Ada"},
    )
    CallAnalysis.objects.create(call=call, status="completed", success=True, summary="Booked.")
    CallCost.objects.create(
        call=call,
        organization=organization,
        workflow_id=call.workflow_id,
        call_created_at=at,
        total_usd=Decimal("0.0123"),
        breakdown=[{"item": "llm", "usd": "0.0123"}],
    )
    RecordingFactory(call=call)

    found = call_get(organization=organization, call_id=str(call.pk), related=DETAIL_RELATED)
    expected = _orm(call)

    assert _fields(found) == _fields(expected)
    for name in DETAIL_RELATED:
        assert _fields(getattr(found, name)) == _fields(getattr(expected, name))
        assert getattr(found, name).call is found  # no query to walk back
    # Types, not only equal text: uuids, aware datetimes and decimals (SQLite stores text).
    assert found.pk == call.pk and found.organization_id == organization.pk
    assert found.created_at.tzinfo is not None
    assert found.cost.total_usd == Decimal("0.0123")
    assert found._state.adding is False


def test_a_call_without_them_has_none_and_asking_costs_no_query(
    organization, workflow, django_assert_num_queries
) -> None:
    call = CallFactory(organization=organization, workflow=workflow)

    with django_assert_num_queries(1):
        found = call_get(organization=organization, call_id=str(call.pk), related=DETAIL_RELATED)
        for name in DETAIL_RELATED:
            with pytest.raises(Call._meta.get_field(name).related_model.DoesNotExist):
                getattr(found, name)

    assert _fields(found) == _fields(_orm(call))


def test_another_organizations_call_and_an_unknown_id_are_none(
    organization, workflow, outsider_workflow
) -> None:
    theirs = CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)

    assert call_get(organization=organization, call_id=str(theirs.pk)) is None
    unknown = "0b0e9c1e-6c55-4a36-9a55-3c1f3f3c0000"
    assert call_get(organization=organization, call_id=unknown) is None


def test_only_the_one_to_ones_asked_for_are_loaded(
    organization, workflow, django_assert_num_queries
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    RecordingFactory(call=call)

    found = call_get(organization=organization, call_id=str(call.pk), related=("recording",))

    assert _fields(found) == _fields(_orm(call))
    with django_assert_num_queries(0):
        assert found.recording.egress_id == call.recording.egress_id
    with django_assert_num_queries(1):
        with pytest.raises(CallAnalysis.DoesNotExist):
            assert found.analysis is None  # raises: the call has none
