"""The post-call analysis in the API: on the call, on its own path, re-run on request,
and as list filters."""

from __future__ import annotations

import copy

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from rest_framework.test import APIClient

from accounts.models import Organization
from analysis.models import CallAnalysis
from calls.models import Call
from tests.factories import CallFactory, WorkflowFactory
from workflows.demo import DEMO_DEFINITION

pytestmark = pytest.mark.django_db

ANALYSIS = {
    "summary_prompt": "Summarize.",
    "structured_data_schema": None,
    "success_criteria": "A meal was logged.",
    "provider": None,
    "model": None,
}
COMPLETED = {
    "status": "completed",
    "summary": "Ada logged lunch.",
    "structured_data": {"meal_type": "lunch"},
    "success": True,
    "error": None,
    "model": "gpt-4.1-mini",
}


def analysed_call(organization: Organization, **analysis: object) -> Call:
    definition = {**copy.deepcopy(DEMO_DEFINITION), "analysis": ANALYSIS}
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    if analysis:
        analysis["error"] = analysis.get("error") or ""
        CallAnalysis.objects.create(call=call, provider="openai", **analysis)
    return call


def conflict(code: str, detail: str) -> dict:
    return {"type": "client_error", "errors": [{"code": code, "detail": detail, "attr": None}]}


def test_a_call_carries_its_completed_analysis(api: APIClient, organization: Organization) -> None:
    call = analysed_call(organization, **COMPLETED)

    detail = api.get(f"/api/v1/calls/{call.pk}").json()
    alone = api.get(f"/api/v1/calls/{call.pk}/analysis")

    assert detail["analysis"] == COMPLETED
    assert alone.status_code == 200
    assert alone.json() == COMPLETED


def test_a_call_of_a_workflow_without_analysis_has_null_and_its_analysis_path_is_404(
    api: APIClient, organization: Organization
) -> None:
    call = CallFactory(organization=organization, completed=True)

    assert api.get(f"/api/v1/calls/{call.pk}").json()["analysis"] is None
    response = api.get(f"/api/v1/calls/{call.pk}/analysis")
    assert response.status_code == 404
    assert response.json()["errors"][0]["detail"] == (
        "This call's workflow has no analysis setting."
    )


def test_the_analysis_path_of_a_call_in_progress_is_404_saying_it_runs_after_the_end(
    api: APIClient, organization: Organization
) -> None:
    definition = {**copy.deepcopy(DEMO_DEFINITION), "analysis": ANALYSIS}
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow, active=True)

    response = api.get(f"/api/v1/calls/{call.pk}/analysis")

    assert response.status_code == 404
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "not_found",
                "detail": "This call has not ended; its analysis runs once it has.",
                "attr": None,
            }
        ],
    }


def test_another_organizations_analysis_is_404(
    api: APIClient, outsider: Organization, organization: Organization
) -> None:
    call = analysed_call(outsider, **COMPLETED)

    assert api.get(f"/api/v1/calls/{call.pk}/analysis").status_code == 404
    assert api.post(f"/api/v1/calls/{call.pk}/analysis").status_code == 404


def test_rerunning_a_finished_analysis_starts_a_new_pending_run(
    api: APIClient, organization: Organization, django_capture_on_commit_callbacks: object
) -> None:
    call = analysed_call(organization, **{**COMPLETED, "finished_at": timezone.now()})

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/calls/{call.pk}/analysis")

    assert response.status_code == 202
    assert response.json() == {
        "status": "pending",
        "summary": None,
        "structured_data": None,
        "success": None,
        "error": None,
        "model": "gpt-4.1-mini",
    }
    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.run, analysis.attempts) == (2, 0)
    (task,) = DBTaskResult.objects.filter(queue_name="analysis")
    assert task.args_kwargs["args"] == [str(call.pk), 2]


@pytest.mark.parametrize("status", ["pending", "running"])
def test_rerunning_while_a_run_is_open_returns_that_run(
    api: APIClient,
    organization: Organization,
    status: str,
    django_capture_on_commit_callbacks: object,
) -> None:
    call = analysed_call(organization, status=status, model="gpt-4.1-mini")

    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(f"/api/v1/calls/{call.pk}/analysis")
        second = api.post(f"/api/v1/calls/{call.pk}/analysis")

    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == second.json()["status"] == status
    assert CallAnalysis.objects.get(call=call).run == 1
    assert not DBTaskResult.objects.filter(queue_name="analysis").exists()


def test_rerunning_a_call_never_analysed_creates_its_run(
    api: APIClient, organization: Organization, django_capture_on_commit_callbacks: object
) -> None:
    call = analysed_call(organization)

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/calls/{call.pk}/analysis")

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    assert DBTaskResult.objects.filter(queue_name="analysis").count() == 1


def test_rerunning_an_open_call_is_409(api: APIClient, organization: Organization) -> None:
    call = analysed_call(organization)
    Call.objects.filter(pk=call.pk).update(status="active", ended_at=None, end_reason=None)

    response = api.post(f"/api/v1/calls/{call.pk}/analysis")

    assert response.status_code == 409
    assert response.json() == conflict("call_not_ended", "This call has not ended yet.")
    assert not CallAnalysis.objects.exists()


def test_rerunning_a_call_of_a_workflow_without_analysis_is_409(
    api: APIClient, organization: Organization
) -> None:
    call = CallFactory(organization=organization, completed=True)

    response = api.post(f"/api/v1/calls/{call.pk}/analysis")

    assert response.status_code == 409
    assert response.json() == conflict(
        "analysis_not_configured", "This call's workflow has no analysis setting."
    )


def test_the_list_filters_by_success_and_analysis_status(
    api: APIClient, organization: Organization
) -> None:
    succeeded = analysed_call(organization, **COMPLETED)
    unsuccessful = analysed_call(organization, **{**COMPLETED, "success": False})
    failed = analysed_call(organization, status="failed", error="Invalid answer.")
    CallFactory(organization=organization, completed=True)

    def ids(query: str) -> list[str]:
        response = api.get(f"/api/v1/calls?{query}")
        assert response.status_code == 200, response.json()
        assert response.json()["total"] == len(response.json()["items"])
        return sorted(item["id"] for item in response.json()["items"])

    assert ids("success=true") == [str(succeeded.pk)]
    assert ids("success=false") == [str(unsuccessful.pk)]
    assert ids("analysis_status=completed") == sorted([str(succeeded.pk), str(unsuccessful.pk)])
    assert ids("analysis_status=failed") == [str(failed.pk)]
    assert ids("analysis_status=failed&success=true") == []


@pytest.mark.parametrize("query", ["analysis_status=done", "success=maybe", "success="])
def test_an_unknown_analysis_filter_value_is_400(api: APIClient, query: str) -> None:
    response = api.get(f"/api/v1/calls?{query}")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == query.split("=")[0]
