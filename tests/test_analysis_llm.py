"""The analysis' HTTP client on its own: what a provider's Retry-After means."""

from __future__ import annotations

import datetime
import email.utils

import pytest
from django.utils import timezone

from analysis.llm import _retry_after


@pytest.mark.parametrize("value", [None, "", "soon", "Mon, 99 Foo 20xx", "-"])
def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(value: str | None) -> None:
    assert _retry_after(value) is None


def test_a_retry_after_in_seconds_or_as_an_http_date_is_honoured() -> None:
    later = timezone.now() + datetime.timedelta(seconds=120)

    assert _retry_after("7") == 7.0
    assert _retry_after("-3") == 0.0
    assert 100 < _retry_after(email.utils.format_datetime(later, usegmt=True)) <= 120
