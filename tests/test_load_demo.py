from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from accounts.services import organization_get_or_create
from workflows.models import Workflow
from workflows.serializers import WorkflowWriteSerializer, workflow_as_input
from workflows.services import workflow_delete, workflow_demo_load

pytestmark = pytest.mark.django_db


def test_it_creates_daily_call_with_three_agents_and_save_meal() -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())

    workflow = Workflow.objects.get(organization__slug="demo", slug="daily-call")
    definition = workflow.current_version.definition
    assert definition["start_agent"] == "greeter-agent"
    assert [a["name"] for a in definition["agents"]] == [
        "greeter-agent",
        "meal-agent",
        "feedback-agent",
    ]
    tools = [t["name"] for a in definition["agents"] for t in a["tools"]]
    assert tools == ["save_meal"]


def test_running_it_twice_changes_nothing() -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())
    out = StringIO()
    call_command("load_demo", "--org", "demo", stdout=out)

    assert Workflow.objects.count() == 1
    assert "Already present" in out.getvalue()


def test_the_demo_is_stored_as_the_api_validates_it() -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())
    workflow = Workflow.objects.select_related("current_version").get()

    data = WorkflowWriteSerializer(data=workflow_as_input(workflow))

    assert data.is_valid(), data.errors
    definition = workflow.current_version.definition
    assert [agent["handoffs"] for agent in definition["agents"]] == [
        ["meal-agent"],
        ["feedback-agent"],
        [],
    ]
    # defaults were filled in by the same validation the API runs
    assert definition["agents"][1]["tools"][0]["url"] is None
    assert definition["agents"][0]["stt"]["voice"] is None


def test_it_creates_the_demo_again_after_it_was_deleted() -> None:
    call_command("load_demo", "--org", "demo", stdout=StringIO())
    workflow_delete(workflow=Workflow.objects.get())

    call_command("load_demo", "--org", "demo", stdout=StringIO())

    assert Workflow.objects.filter(deleted_at__isnull=True).count() == 1
    assert Workflow.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_load_running_at_the_same_time_finds_the_demo_instead_of_failing() -> None:
    """The other load's workflow is not committed when this one looks for it, so this
    one creates it too, and waits on the unique slug until the other commits."""
    organization = organization_get_or_create(slug="demo")
    created = threading.Event()

    def other_load() -> None:
        try:
            with transaction.atomic():
                workflow_demo_load(organization=organization)
                created.set()
                time.sleep(1)  # this load waits on the slug meanwhile
        finally:
            connection.close()

    other = threading.Thread(target=other_load)
    other.start()
    assert created.wait(10)
    out = StringIO()
    call_command("load_demo", "--org", "demo", stdout=out)
    other.join()

    assert Workflow.objects.filter(organization=organization).count() == 1
    assert "Already present" in out.getvalue()
