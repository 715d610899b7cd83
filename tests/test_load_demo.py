from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from workflows.models import Workflow

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
