"""The structured-data schema as the provider receives it: what JSON Schema allows but
providers refuse is sent in an equivalent form they take (the fake_llm stand-in refuses
as OpenAI does); an answer the provider's own check refuses is retried as ours."""

from __future__ import annotations

import copy

import pytest

from accounts.models import Organization
from analysis.models import CallAnalysis
from calls.lifecycle import call_transition
from calls.models import CallStatus
from tests.factories import CallFactory, ProviderKeyFactory, TranscriptEntryFactory, WorkflowFactory
from tests.fake_llm import FakeLLM, Outcome
from tests.tasks import run_task_worker
from voicecalls.json_schemas import checking_validator
from workflows.demo import DEMO_DEFINITION

pytestmark = pytest.mark.django_db(transaction=True)

UNTYPED_ARRAYS = {
    "$defs": {"notes": {"type": "array"}},
    "type": "object",
    "properties": {
        "tags": {"type": "array", "maxItems": 3},
        "notes": {"$ref": "#/$defs/notes"},
        "pair": {"type": ["array", "null"], "prefixItems": [{"type": "string"}]},
        "meals": {"type": "array", "items": {"type": "object", "properties": {
            "sides": {"type": "array"},
        }}},
    },
    "required": ["tags"],
}  # fmt: skip
ANSWER = {
    "summary": "Ada logged lunch.",
    "structured_data": {"tags": ["lunch", 1], "pair": ["a", 2], "meals": [{"sides": [None]}]},
}


def test_arrays_without_items_reach_the_provider_in_a_form_it_takes_and_checks_the_same(
    organization: Organization, settings: object
) -> None:
    """The API takes an array schema without `items` (any items, in every draft); OpenAI
    refuses the whole request ("array schema missing items"), so every analysis of the
    workflow failed with that 400. It is sent with `"items": {}`, which means the same."""
    settings.WEBHOOKS_END_REPORT_DELAY = 0
    definition = {
        **copy.deepcopy(DEMO_DEFINITION),
        "analysis": {"summary_prompt": "Summarize.", "structured_data_schema": UNTYPED_ARRAYS},
    }
    workflow = WorkflowFactory(organization=organization, definition=definition)
    ProviderKeyFactory(organization=organization, provider_type="llm", provider_name="openai")
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    TranscriptEntryFactory(call=call, role="user", content="A salad for lunch.")
    assert call_transition(
        call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup"
    )

    with FakeLLM(default=Outcome.answer(ANSWER)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        run_task_worker("analysis")

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.error) == ("completed", "")
    assert analysis.structured_data == ANSWER["structured_data"]
    (request,) = fake.requests
    sent = checking_validator(request.body["response_format"]["json_schema"]["schema"])
    assert sent.is_valid(ANSWER)
    for wrong in (
        {"tags": "lunch"},
        {"tags": [1, 2, 3, 4]},
        {"tags": [], "notes": "x"},
        {"tags": [], "pair": [1]},
        {"tags": [], "meals": [{"sides": {}}]},
    ):
        assert not sent.is_valid({**ANSWER, "structured_data": wrong}), wrong


def test_an_answer_is_checked_against_the_schema_as_written_not_as_sent() -> None:
    """`"items": {}` beside `unevaluatedItems` lets every item through in what the
    provider is sent; the answer itself is still held to the customer's schema."""
    from analysis.prompt import answer_problem

    pair = {"type": "array", "prefixItems": [{"type": "string"}], "unevaluatedItems": False}
    analysis = {
        "summary_prompt": "s",
        "structured_data_schema": {"type": "object", "properties": {"pair": pair}},
    }

    assert (
        answer_problem('{"summary": "s", "structured_data": {"pair": ["a"]}}', analysis)[1] is None
    )
    _answer, problem = answer_problem(
        '{"summary": "s", "structured_data": {"pair": ["a", "b"]}}', analysis
    )
    assert problem is not None and "/structured_data/pair" in problem


def test_an_answer_groq_refuses_as_not_matching_is_retried_once_with_the_reason(
    organization: Organization, settings: object
) -> None:
    """Groq checks a best-effort answer itself and, when it does not match, answers 400
    `json_validate_failed` with what the model wrote: a model's slip, which failed the
    analysis at once (a 400 is not retried) where any other invalid answer is asked
    once more, with what was wrong."""
    settings.WEBHOOKS_END_REPORT_DELAY = 0
    definition = {
        **copy.deepcopy(DEMO_DEFINITION),
        "analysis": {
            "summary_prompt": "Summarize.",
            "structured_data_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "provider": "groq",
            "model": "llama-3.3-70b-versatile",
        },
    }
    workflow = WorkflowFactory(organization=organization, definition=definition)
    ProviderKeyFactory(organization=organization, provider_type="llm", provider_name="groq")
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    TranscriptEntryFactory(call=call, role="user", content="Three salads.")
    assert call_transition(
        call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup"
    )
    refused = Outcome(
        status=400,
        message="Failed to generate JSON. Please adjust your prompt.",
        error_code="json_validate_failed",
        failed_generation='{"summary": "s", "structured_data": {"n": "three"}}',
    )
    right = {"summary": "Three salads.", "structured_data": {"n": 3}}

    with FakeLLM([refused], default=Outcome.answer(right)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        run_task_worker("analysis")

    analysis = CallAnalysis.objects.get(call=call)
    assert (analysis.status, analysis.structured_data) == ("completed", {"n": 3})
    first, second = fake.requests
    assert second.messages[2]["content"] == refused.failed_generation
    assert "does not match the schema at /structured_data/n" in second.messages[3]["content"]
