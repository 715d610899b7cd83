from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from workflows.models import Workflow
from workflows.serializers import WorkflowWriteSerializer, workflow_as_input


def test_load_demo_creates_daily_call_once(db: None) -> None:
    out = StringIO()
    call_command("load_demo", "--org", "demo", stdout=out)
    call_command("load_demo", "--org", "demo", stdout=out)

    workflow = Workflow.objects.get()
    assert workflow.slug == "daily-call"
    assert "Created workflow daily-call" in out.getvalue()
    assert "Already present: workflow daily-call" in out.getvalue()
    assert workflow.versions.count() == 1


def test_the_demo_is_stored_as_the_api_validates_it(db: None) -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())
    workflow = Workflow.objects.select_related("current_version").get()

    data = WorkflowWriteSerializer(data=workflow_as_input(workflow))

    assert data.is_valid(), data.errors
    definition = workflow.current_version.definition
    assert definition["start_agent"] == "greeter-agent"
    assert [agent["handoffs"] for agent in definition["agents"]] == [
        ["meal-agent"],
        ["feedback-agent"],
        [],
    ]
    # defaults were filled in by the same validation the API runs
    assert definition["agents"][1]["tools"][0]["url"] is None
    assert definition["agents"][0]["stt"]["voice"] is None


def test_load_demo_after_the_demo_was_deleted_creates_it_again(db: None) -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())
    Workflow.objects.update(deleted_at="2026-01-01T00:00:00Z")

    call_command("load_demo", "--org", "demo", stdout=StringIO())

    assert Workflow.objects.filter(deleted_at__isnull=True).count() == 1
    assert Workflow.objects.count() == 2
