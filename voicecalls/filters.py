"""django-filter filters shared by the API's list operations."""

from __future__ import annotations

from typing import Any

from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

# Django refuses U+0000 in form input (ProhibitNullCharactersValidator).
NO_NUL_PATTERN = r"^[^\u0000]*$"


def text_filter(*, max_length: int, **kwargs: Any) -> filters.CharFilter:
    """A text filter whose every rule the schema states: at most `max_length`
    characters as sent (not stripped first, so the length is the one the client
    chose), no NUL character."""
    text = filters.CharFilter(max_length=max_length, strip=False, **kwargs)
    schema = {"type": "string", "maxLength": max_length, "pattern": NO_NUL_PATTERN}
    if "help_text" in kwargs:
        schema["description"] = kwargs["help_text"]
    return extend_schema_field(schema)(text)
