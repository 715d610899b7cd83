"""Templates as a write compiles them: what Python cannot compile is a 400 naming it,
and what would compile for too long (too complex, or a workflow's templates past their
budget together) a 400 at once; the slowest valid workflow is saved in seconds."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.test_workflows_api import body
from workflows.models import Workflow, WorkflowVersion


@pytest.mark.parametrize(
    "instructions",
    [
        "{% macro greet(name, name) %}Hi {{ name }}{% endmacro %}",
        "{{ user.get('name', default='x', default='y') }}",
        "{{ " + "9" * 4500 + " }}",
        "{% for a in [1] %}" * 21 + "x" + "{% endfor %}" * 21,
        "{{ " + "(" * 90 + "1" + ")" * 90 + " }}",
        "{{ user" + ".a" * 300 + " }}",
    ],
    ids=[
        "macro-repeated-argument",
        "repeated-keyword",
        "long-number",
        "nested-for",
        "parens",
        "attrs",
    ],
)
def test_a_template_python_cannot_compile_is_a_400_naming_it(
    api: APIClient, instructions: str
) -> None:
    """Jinja compiles a template to Python: what Python refuses was a 500."""
    data = body()
    data["agents"][0]["instructions"] = instructions
    api.raise_request_exception = False

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["agents.0.instructions"]


def test_an_analysis_prompt_python_cannot_compile_is_a_400_naming_it(api: APIClient) -> None:
    data = body(analysis={"summary_prompt": "{% macro s(a, a) %}{% endmacro %}Summarize."})
    api.raise_request_exception = False

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["analysis.summary_prompt"]


def _every_template(data: dict, template: Callable[[str, int], str]) -> dict:
    """`data` with twenty agents, and each prompt template a workflow has made by
    `template(name, max_length)`: `name` a variable of its own, so no two are alike."""
    agent = data["agents"][1]
    data["agents"] = [
        {
            **copy.deepcopy(agent),
            "name": f"agent-{i}",
            "instructions": template(f"i{i}", 20_000),
            "greeting": template(f"g{i}", 2_000),
        }
        for i in range(20)
    ]
    data["start_agent"] = "agent-0"
    data["analysis"] = {"summary_prompt": template("s", 8_000)}
    data["settings"] = {"voicemail": {"action": "leave_message", "message": template("v", 2_000)}}
    return data


class _TooSlow(BaseException):
    """Raised by the alarm; a BaseException, so no `except Exception` holds it."""


def _within_seconds(seconds: float, request: Any) -> Any:
    import signal

    def too_slow(signum: int, frame: object) -> None:
        raise _TooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return request()
    except _TooSlow:
        pytest.fail(f"the request was still running after {seconds} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_workflow_of_templates_too_complex_to_compile_is_a_400_at_once(api: APIClient) -> None:
    """Filter chains a hundred deep, as many as each template's length limit allows,
    compiled for many minutes before anything answered."""

    def chains(name: str, max_length: int) -> str:
        chain = "{{ " + name + "|e" * 100 + " }}"
        return chain * (max_length // len(chain))

    data = _every_template(body(), chains)
    data["agents"] = data["agents"][:4]  # ten templates, each counting 500: the budget

    response = _within_seconds(10, lambda: api.post("/api/v1/workflows", data, format="json"))

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert {e["attr"] for e in errors} == {
        *(f"agents.{i}.{field}" for i in range(4) for field in ("instructions", "greeting")),
        "analysis.summary_prompt",
        "settings.voicemail.message",
    }
    assert {e["code"] for e in errors} == {"template_syntax_error"}
    first = next(e for e in errors if e["attr"] == "agents.0.instructions")
    assert first["detail"].startswith(
        "Agent 'agent-0' instructions: Template too complex: more than 500 tokens"
    )
    assert Workflow.objects.count() == 0


def _widest(name: str, max_length: int) -> str:
    """A comparison chain at the token bound (each operand compiles to a costed filter
    call): the slowest valid template found."""
    from workflows.prompts import MAX_TEMPLATE_TOKENS

    source = "{{ " + name + f" < {name}" * ((MAX_TEMPLATE_TOKENS - 3) // 2) + " }}"
    assert len(source) <= max_length
    return source


def _widest_first(count: int) -> Callable[[str, int], str]:
    """The first `count` templates `_every_template` makes at the bound, the rest small."""
    made = iter(range(10_000))

    def template(name: str, max_length: int) -> str:
        return _widest(name, max_length) if next(made) < count else "{{ " + name + " }}"

    return template


def test_the_slowest_workflow_to_compile_that_is_valid_is_saved_in_seconds(
    api: APIClient,
) -> None:
    """As many templates at the token bound as the workflow's budget holds (5,000 tokens:
    nine, with the rest small); the alarm is far above what it takes, and far below
    what templates took before they were bounded."""
    data = _every_template(body(), _widest_first(9))

    response = _within_seconds(10, lambda: api.post("/api/v1/workflows", data, format="json"))

    assert response.status_code == 201, response.json()


def test_templates_past_the_workflows_budget_together_are_a_400_before_any_compiles(
    api: APIClient,
) -> None:
    """Each template within its own bound, forty-two of them compiled for about a
    second on every write: a hostile organization kept a core busy at its write rate."""
    data = _every_template(body(), _widest)

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {
            "attr": "agents",
            "code": "template_syntax_error",
            "detail": "Templates too complex together: more than 5,000 tokens in all (the "
            "agents' instructions and greetings, the voicemail message and the analysis "
            "prompt; each counts as it does against its own bound).",
        }
    ]
    assert Workflow.objects.count() == 0


def test_a_patch_that_takes_the_templates_past_the_budget_is_a_400_and_changes_nothing(
    api: APIClient,
) -> None:
    data = _every_template(body(), _widest_first(9))
    created = api.post("/api/v1/workflows", data, format="json")
    assert created.status_code == 201, created.json()
    workflow_id = created.json()["id"]
    agents = created.json()["agents"]
    agents[19]["instructions"] = _widest("x", 20_000)

    response = api.patch(f"/api/v1/workflows/{workflow_id}", {"agents": agents}, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == ["agents"]
    assert WorkflowVersion.objects.filter(workflow_id=workflow_id).count() == 1
