"""django-filter filters shared by the API's list operations."""

from __future__ import annotations

from typing import Any

from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

from voicecalls.fields import repeated_parameters

# Django refuses U+0000 in form input (ProhibitNullCharactersValidator).
NO_NUL_PATTERN = r"^[^\u0000]*$"


class NotBlankMixin:
    """An empty `?name=` is a 400, not a filter silently left out (for a user id, a
    client whose variable was empty would get every user's calls). So are blanks alone
    where the field strips them (a uuid): stripped, they were nothing too."""

    def clean(self, value: object) -> object:
        stripped = getattr(self, "strip", False) and isinstance(value, str)
        if value == "" or (stripped and not value.strip()):
            raise forms.ValidationError("May not be empty.", code="blank")
        return super().clean(value)


class NotBlankCharField(NotBlankMixin, forms.CharField):
    pass


class NotBlankCharFilter(filters.CharFilter):
    field_class = NotBlankCharField


def text_filter(*, max_length: int, **kwargs: Any) -> filters.CharFilter:
    """A text filter whose every rule the schema states: 1 to `max_length` characters
    as sent (not stripped first: values are stored as sent), no NUL character."""
    text = NotBlankCharFilter(max_length=max_length, strip=False, **kwargs)
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": NO_NUL_PATTERN,
    }
    if "help_text" in kwargs:
        schema["description"] = kwargs["help_text"]
    return extend_schema_field(schema)(text)


class SingleValueFilterSet(filters.FilterSet):
    """A filter given more than once (`?user_id=a&user_id=b`) is a 400 naming it: the
    form reads only the last value, silently dropping the others. Filters that take
    several values (comma-separated, or repeated) are named in `repeatable`."""

    repeatable: frozenset[str] = frozenset()

    def is_valid(self) -> bool:
        valid = super().is_valid()
        names = [name for name in self.filters if name not in self.repeatable]
        for name, errors in repeated_parameters(self.data, names).items():
            self.form.add_error(name, forms.ValidationError(errors[0], code="repeated"))
        return valid and not self.form.errors
