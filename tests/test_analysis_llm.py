"""The analysis' HTTP client on its own: what a provider's Retry-After and error mean."""

from __future__ import annotations

import datetime
import email.utils

import pytest
from django.utils import timezone

from analysis.llm import ProviderError, _retry_after, chat_completion
from tests.fake_llm import FakeLLM, Outcome


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 20xx", "-"])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(value: str | None) -> None:
    assert _retry_after(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 01 Jan 2020 99999999999999999999:00:00 GMT",
        "Mon, 01 Jan 2020 10:00:00 +99999999999999999999",
        "Mon, 01 Jan 99999999999 10:00:00 GMT",
    ],
)
def test_a_retry_after_date_beyond_the_calendar_is_ignored(value: str) -> None:
    """email.utils raises OverflowError for these (no ValueError): the provider's 429
    became "The analysis stopped on an internal error", its own message lost."""
    assert _retry_after(value) is None


def test_a_retry_after_in_seconds_or_as_an_http_date_is_honoured() -> None:
    later = timezone.now() + datetime.timedelta(seconds=120)

    assert _retry_after("7") == 7.0
    assert _retry_after("-3") == 0.0
    assert 100 < _retry_after(email.utils.format_datetime(later, usegmt=True)) <= 120


def test_an_error_sent_in_a_list_as_gemini_does_keeps_its_message(settings: object) -> None:
    """Gemini's OpenAI-compatible endpoint wraps its error in a list: the message was
    dropped and the analysis failed with "google answered HTTP 400." alone, never why."""
    refusal = Outcome(status=400, message="Invalid JSON payload received.", error_in_list=True)
    with FakeLLM(default=refusal) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        with pytest.raises(ProviderError) as raised:
            chat_completion(provider="google", model="gemini", api_key="k", messages=[], schema={})

    assert str(raised.value) == "google answered HTTP 400: Invalid JSON payload received."
    assert raised.value.retryable is False


def _answered(settings: object, usage: object) -> object:
    with FakeLLM(default=Outcome.answer({"summary": "ok"}, usage=usage)) as fake:
        settings.ANALYSIS_LLM_BASE_URL = fake.url
        return chat_completion(
            provider="openai", model="gpt-4.1-mini", api_key="k", messages=[], schema={}
        )


def test_the_tokens_a_provider_reports_come_with_its_answer(settings: object) -> None:
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "total_tokens": 2300,
        "prompt_tokens_details": {"cached_tokens": 500},
    }

    assert _answered(settings, usage).usage == {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "cached_tokens": 500,
    }


@pytest.mark.parametrize(
    ("usage", "read"),
    [
        (None, None),
        ("lots", None),
        ({}, None),
        ({"prompt_tokens": 0, "completion_tokens": 0}, None),
        ({"prompt_tokens": 10, "completion_tokens": 2}, (10, 2, 0)),
        ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None}, (10, 2, 0)),
        ({"prompt_tokens": -5, "completion_tokens": 2}, (0, 2, 0)),
        ({"prompt_tokens": True, "completion_tokens": 2.5}, None),
        ({"prompt_tokens": 10**11, "completion_tokens": 2}, (0, 2, 0)),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 50}}, (10, 0, 10)),
    ],
    ids=[
        "absent",
        "not-an-object",
        "empty",
        "zeros",
        "no-details",
        "null-details",
        "negative",
        "not-integers",
        "beyond-bound",
        "cached-over-prompt",
    ],
)
def test_usage_a_provider_reports_oddly_counts_only_what_makes_sense(
    settings: object, usage: object, read: tuple | None
) -> None:
    """A gateway's answer may carry no usage, or nonsense: the answer is still used, and
    no count is made up (a cached count is some of the prompt, never more)."""
    got = _answered(settings, usage).usage
    expected = None
    if read is not None:
        names = ("prompt_tokens", "completion_tokens", "cached_tokens")
        expected = dict(zip(names, read, strict=True))
    assert got == expected
