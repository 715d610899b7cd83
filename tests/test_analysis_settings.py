"""A workflow's `analysis` setting: validated at save time, versioned with the workflow."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.test_workflows_api import body, errors
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {"meal_type": {"type": "string"}, "calories": {"type": "integer"}},
    "required": ["meal_type"],
}


def with_analysis(analysis: Any, **overrides: Any) -> dict:
    return body(analysis=analysis, **overrides)


def test_an_analysis_setting_is_stored_with_its_defaults_filled(api: APIClient) -> None:
    response = api.post(
        "/api/v1/workflows",
        with_analysis({"structured_data_schema": SCHEMA, "success_criteria": "A meal logged."}),
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["analysis"] == {
        "summary_prompt": "Summarize the call in two or three sentences.",
        "structured_data_schema": SCHEMA,
        "success_criteria": "A meal logged.",
        "provider": None,
        "model": None,
    }
    version = Workflow.objects.get().current_version
    assert version.analysis["structured_data_schema"] == SCHEMA


def test_without_analysis_the_version_holds_no_analysis_key(api: APIClient) -> None:
    response = api.post("/api/v1/workflows", body(), format="json")

    assert response.json()["analysis"] is None
    assert "analysis" not in Workflow.objects.get().current_version.definition


def test_patching_the_analysis_adds_a_version_and_null_removes_it(api: APIClient) -> None:
    created = api.post("/api/v1/workflows", body(), format="json").json()
    url = f"/api/v1/workflows/{created['id']}"

    added = api.patch(url, {"analysis": {"success_criteria": "Booked."}}, format="json")
    removed = api.patch(url, {"analysis": None}, format="json")

    assert added.json()["version"] == 2
    assert added.json()["analysis"]["success_criteria"] == "Booked."
    assert removed.json()["version"] == 3
    assert removed.json()["analysis"] is None


@pytest.mark.parametrize(
    ("analysis", "attr", "code"),
    [
        ({"summary_prompt": "{{ user.name "}, "analysis.summary_prompt", "template_syntax_error"),
        ({"summary_prompt": "x" * 8001}, "analysis.summary_prompt", "max_length"),
        ({"structured_data_schema": {"type": "nope"}}, "analysis.structured_data_schema", None),
        ({"structured_data_schema": [1]}, "analysis.structured_data_schema", "not_an_object"),
        (
            {"structured_data_schema": {"type": "object", "description": "x" * 17000}},
            "analysis.structured_data_schema",
            "too_large",
        ),
        (
            {"structured_data_schema": {"$ref": "https://example.com/schema.json"}},
            "analysis.structured_data_schema",
            "remote_ref",
        ),
        (
            # Python reads `\Z`; the checker of answers (ECMA-262 regexes) does not.
            {"structured_data_schema": {"type": "string", "pattern": "a\\Z"}},
            "analysis.structured_data_schema",
            "invalid_schema",
        ),
        (
            {
                "structured_data_schema": {
                    "$schema": "http://json-schema.org/draft-03/schema#",
                    "type": "object",
                }
            },
            "analysis.structured_data_schema",
            "invalid_schema",
        ),
        ({"provider": "anthropic", "model": "claude"}, "analysis.provider", None),
        ({"provider": "nope", "model": "x"}, "analysis.provider", "unsupported_provider"),
        ({"provider": "openai"}, "analysis.model", "required"),
        ({"model": "gpt-4.1-mini"}, "analysis.provider", "required"),
        ({"success_criteria": "x" * 4001}, "analysis.success_criteria", "max_length"),
        ("not an object", "analysis.non_field_errors", None),
    ],
)
def test_an_invalid_analysis_setting_is_a_400_naming_it(
    api: APIClient, analysis: Any, attr: str, code: str | None
) -> None:
    response = api.post("/api/v1/workflows", with_analysis(analysis), format="json")

    assert response.status_code == 400, response.json()
    assert attr in {a for a, _ in errors(response)}
    if code:
        assert (attr, code) in errors(response)
    assert Workflow.objects.count() == 0


def test_analysis_on_a_start_agent_llm_without_an_openai_compatible_api_is_a_400(
    api: APIClient,
) -> None:
    data = with_analysis({"success_criteria": "Booked."})
    data["agents"][0]["llm"] = {"provider": "anthropic", "model": "claude-sonnet-4-6"}

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert ("analysis.provider", "unsupported_provider") in errors(response)


def test_an_anthropic_start_agent_may_run_its_analysis_on_another_provider(
    api: APIClient,
) -> None:
    data = with_analysis({"provider": "groq", "model": "llama-3.3-70b-versatile"})
    data["agents"][0]["llm"] = {"provider": "anthropic", "model": "claude-sonnet-4-6"}

    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 201, response.json()


class _TooSlow(BaseException):
    """Raised by the alarm; a BaseException, so nothing on the way catches it."""


def test_a_schema_pattern_that_backtracks_forever_in_python_checks_an_answer_at_once() -> None:
    """Python's `re` took hours on `^(a+)+$` and forty a's and a "!": the model's answer
    stalled the analysis queue's worker, every organization's analyses with it."""
    import signal

    from analysis.prompt import answer_problem
    from analysis.settings import AnalysisSettingsSerializer

    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
    settings = AnalysisSettingsSerializer(data={"structured_data_schema": schema})
    assert settings.is_valid(), settings.errors
    content = '{"summary": "s", "structured_data": {"code": "' + "a" * 40 + '!"}}'

    def too_slow(signum: int, frame: object) -> None:
        raise _TooSlow()

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        problem = answer_problem(content, dict(settings.validated_data))
    except _TooSlow:
        pytest.fail("checking a 40-character answer was still running after 30 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    assert problem == (
        None,
        "The answer does not match the schema at /structured_data/code: "
        '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!" does not match "^(a+)+$"',
    )


# What zod-to-json-schema and Pydantic v1 emit: a draft-07 `$schema`, and `format`.
DRAFT7_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "callback_at": {"type": "string", "format": "date-time"},
    },
    "required": ["email"],
}


@pytest.mark.parametrize(
    "schema",
    [
        DRAFT7_SCHEMA,
        {**DRAFT7_SCHEMA, "$schema": "https://example.com/schemas/lead"},  # read as 2020-12
    ],
)
def test_an_answer_is_checked_as_the_schema_always_was_read(api: APIClient, schema: dict) -> None:
    """`format` is an annotation (jsonschema-rs asserted it under drafts 4 to 7), and a
    `$schema` no validator knows is draft 2020-12 (it refused to compile it)."""
    from analysis.prompt import answer_problem

    assert (
        api.post(
            "/api/v1/workflows", with_analysis({"structured_data_schema": schema}), format="json"
        ).status_code
        == 201
    )
    analysis = {"summary_prompt": "s", "structured_data_schema": schema}
    spoken = {"email": "ada at example dot com", "callback_at": "2026-12-07 10:00"}

    passes = answer_problem(json.dumps({"summary": "s", "structured_data": spoken}), analysis)
    fails = answer_problem(json.dumps({"summary": "s", "structured_data": {}}), analysis)

    assert passes == ({"summary": "s", "structured_data": spoken}, None)
    assert fails[1] == (
        'The answer does not match the schema at /structured_data: "email" is a required property'
    )


def test_a_draft7_schema_with_definitions_checks_a_matching_answer() -> None:
    """Its definitions, moved to the root of the answer's schema, were read as draft
    2020-12 there: a draft-07 tuple refused to compile, and every answer failed."""
    from analysis.prompt import answer_problem

    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"slot": {"$ref": "#/definitions/slot"}},
        "definitions": {
            "slot": {
                "type": "array",
                "items": [{"type": "string"}, {"type": "string"}],
                "additionalItems": False,
            }
        },
    }
    analysis = {"summary_prompt": "s", "structured_data_schema": schema}
    answer = {"summary": "s", "structured_data": {"slot": ["monday", "9am"]}}
    wrong = {"summary": "s", "structured_data": {"slot": ["monday", "9am", "extra"]}}

    assert answer_problem(json.dumps(answer), analysis) == (answer, None)
    assert answer_problem(json.dumps(wrong), analysis)[1].startswith(
        "The answer does not match the schema at /structured_data/slot"
    )


ANCHORED_SCHEMA = {
    "$defs": {"meal": {"$anchor": "meal", "type": "string", "enum": ["lunch"]}},
    "type": "object",
    "properties": {"meal_type": {"$ref": "#meal"}},
}


def test_a_schema_referencing_an_anchor_reaches_the_provider_resolvable() -> None:
    """An anchor names a subschema wherever it sits in the document: `#meal` was moved as
    a path, to `#/properties/structured_datameal`, which points at nothing, and a
    provider refuses such a schema, failing every analysis of the workflow."""
    from analysis.prompt import answer_schema
    from analysis.settings import AnalysisSettingsSerializer
    from voicecalls.fields import schema_validator

    settings = AnalysisSettingsSerializer(data={"structured_data_schema": ANCHORED_SCHEMA})
    assert settings.is_valid(), settings.errors

    validator = schema_validator(answer_schema(dict(settings.validated_data)))

    validator.validate({"summary": "s", "structured_data": {"meal_type": "lunch"}})
    wrong = {"summary": "s", "structured_data": {"meal_type": "brunch"}}
    assert [e.message for e in validator.iter_errors(wrong)] != []


def test_a_schema_naming_its_draft_reaches_the_provider_without_the_name_nested() -> None:
    """A schema file names its draft (`$schema`): nested under `structured_data`, the
    keyword sat inside a subschema, where JSON Schema allows it only at a document's
    root and providers translating schemas to their own format refuse it (Gemini:
    "Unknown name $schema"), failing every analysis of the workflow."""
    from analysis.prompt import answer_schema

    schema = {"$schema": "http://json-schema.org/draft-07/schema#", **ANCHORED_SCHEMA}
    sent = answer_schema({"summary_prompt": "s", "structured_data_schema": schema})

    assert "$schema" not in sent["properties"]["structured_data"]
    assert sent["properties"]["structured_data"]["properties"] == ANCHORED_SCHEMA["properties"]


def test_a_schema_with_its_own_id_reaches_the_provider_resolvable() -> None:
    """A schema file names itself (`$id`). Nested as it was, its `$id` made its subschema
    a document of its own, against which every reference moved to the root resolved to
    nothing."""
    from analysis.prompt import answer_schema
    from voicecalls.fields import schema_validator
    from voicecalls.json_schemas import checking_validator

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.com/schemas/meal.json",
        **ANCHORED_SCHEMA,
        "properties": {
            "meal_type": {"$ref": "#/$defs/meal"},
            "again": {"$ref": "#/properties/meal_type"},
            "anchored": {"$ref": "#meal"},
        },
    }
    sent = answer_schema({"summary_prompt": "s", "structured_data_schema": schema})
    wrong = {"summary": "s", "structured_data": {"meal_type": "lunch", "again": "brunch"}}
    right = {"summary": "s", "structured_data": {"meal_type": "lunch", "anchored": "lunch"}}

    for validator in (schema_validator(sent), checking_validator(sent)):
        assert [e.message for e in validator.iter_errors(right)] == []
        assert [e.message for e in validator.iter_errors(wrong)] != []
