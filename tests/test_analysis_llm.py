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
