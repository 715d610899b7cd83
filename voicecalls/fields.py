"""Serializer fields shared by the API's apps."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from jsonschema import validators as jsonschema_validators
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from voicecalls.json_numbers import json_float_growth
from voicecalls.json_schemas import checking_validator, meta_schema_problem


def json_depth(value: object) -> int:
    """Nesting depth of a JSON value (a scalar is 0, `{}` is 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def json_size(value: object) -> int:
    """Bytes of a JSON value as compact UTF-8, as a client sends it: "日" is 3, not the
    6 of its `\\u65e5` escape."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def json_has_nul(value: object) -> bool:
    """Whether any string in a JSON value (keys included) holds U+0000, which
    PostgreSQL's jsonb cannot store."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    return True
                stack.append(child)
        elif isinstance(node, list):
            stack.extend(node)
    return False


class NulRemovedCharField(serializers.CharField):
    """A CharField for text another system sent on a caller's behalf (a carrier's caller
    id), which PostgreSQL cannot store with U+0000 in it: the NUL is removed, not the
    call refused for it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]

    def to_internal_value(self, data: object) -> str:
        return super().to_internal_value(data).replace("\x00", "")


class BoundedJSONObjectField(serializers.JSONField):
    """A JSON object (not a list or scalar) of at most `max_bytes` once serialized (as
    PostgreSQL stores and answers it) and at most `max_depth` levels deep."""

    default_error_messages = {
        "not_an_object": "Must be a JSON object.",
        "too_large": "Must be at most {max_bytes} bytes as JSON.",
        "too_deep": "Must be nested at most {max_depth} levels deep.",
        "null_characters_not_allowed": "Null characters are not allowed.",
        "number_too_large": "Numbers must fit in 64 bits.",
    }

    def __init__(self, *, max_bytes: int, max_depth: int = 8, **kwargs: object) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> dict:
        # Shape and depth first: JSONField's own check encodes the value recursively
        # (a RecursionError, a 500, at ~1000 levels that orjson parsed).
        if not isinstance(data, dict):
            self.fail("not_an_object")
        if json_depth(data) > self.max_depth:
            self.fail("too_deep", max_depth=self.max_depth)
        value = super().to_internal_value(data)
        # Strict JSON (no NaN or Infinity) was checked by JSONField.
        growth = json_float_growth(value)
        if growth is None:
            self.fail("number_too_large")
        if json_size(value) + growth > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        if json_has_nul(value):
            self.fail("null_characters_not_allowed")
        return value


def schema_validator(schema: dict) -> Any:
    """The jsonschema validator for `schema` (its `$schema`, else draft 2020-12)."""
    cls = jsonschema_validators.validator_for(
        schema, default=jsonschema_validators.Draft202012Validator
    )
    return cls(schema)


class JSONSchemaDocumentField(BoundedJSONObjectField):
    """A JSON Schema given as a JSON object: bounded in depth and size, without NUL, and
    one jsonschema accepts. Subclasses set the bounds and add their own rules in
    `check_document` (before the meta-schema check) or after `to_internal_value`."""

    max_depth = 32
    max_bytes = 16 * 1024
    default_error_messages = {
        "not_an_object": "Must be a JSON Schema object.",
        "invalid_schema": "Not a valid JSON Schema: {message}",
    }

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_bytes=self.max_bytes, max_depth=self.max_depth, **kwargs)

    def to_internal_value(self, data: object) -> dict:
        # The bounds first: the meta-schema check and the validator recurse too.
        value = super().to_internal_value(data)
        self.check_document(value)
        if not isinstance(value.get("$schema", ""), str):
            # jsonschema reads it as a URI to pick the meta-schema: anything else raises.
            self.fail("invalid_schema", message="$schema must be a string (a meta-schema URI).")
        problem = meta_schema_problem(value)
        if problem is not None:
            self.fail("invalid_schema", message=problem)
        try:
            checking_validator(value)
        except ValueError as exc:  # what the values are checked with must take it too
            self.fail("invalid_schema", message=str(exc).split("\n", 1)[0])
        return value

    def check_document(self, value: dict) -> None:
        """A subclass's own rules, checked before the meta-schema."""


def _decimal_as_string(field: serializers.DecimalField) -> bool:
    # DRF's own rule (DecimalField.to_representation).
    return getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING)


def json_type_error(field: serializers.Field, value: Any) -> ErrorDetail | dict | None:
    """What is wrong with `value`'s JSON type for `field`, or None.

    DRF coerces: a CharField takes 5 as "5", an IntegerField takes "5" and 5.0, a
    UUIDField takes an integer. The schema promises JSON types, so the API keeps them.
    """
    if value is None:
        return None  # allow_null decides
    expected: tuple[type, ...] | None = None
    if isinstance(field, serializers.BooleanField):
        expected = (bool,)
    elif isinstance(field, serializers.IntegerField):
        expected = (int,)
    elif isinstance(field, serializers.DecimalField) and _decimal_as_string(field):
        expected = (str,)  # as the schema states it: money stays exact in transit
    elif isinstance(field, serializers.FloatField | serializers.DecimalField):
        expected = (int, float)
    elif isinstance(
        field,
        serializers.CharField
        | serializers.ChoiceField
        | serializers.UUIDField
        | serializers.DateTimeField,
    ):
        expected = (str,)
    elif isinstance(field, serializers.ListField | serializers.ListSerializer):
        if not isinstance(value, list):
            return ErrorDetail("Expected a list.", code="not_a_list")
        child = getattr(field, "child", None)
        if isinstance(field, serializers.ListField) and child is not None:
            errors = {
                index: [error]
                for index, item in enumerate(value)
                if isinstance(error := json_type_error(child, item), ErrorDetail)
            }
            return errors or None
        return None
    if expected is None:
        return None
    if isinstance(value, bool) and bool not in expected or not isinstance(value, expected):
        return _type_error(field, value, expected)
    return None


def _type_error(field: serializers.Field, value: Any, expected: tuple[type, ...]) -> ErrorDetail:
    """The field's own message for a wrong value, so clients see the same error
    whichever way the value is wrong."""
    if isinstance(field, serializers.ChoiceField):
        message = field.error_messages["invalid_choice"].format(input=value)
        return ErrorDetail(message, code="invalid_choice")
    message = field.error_messages.get("invalid", "")
    if not message or "{" in message:
        kind = {bool: "boolean", int: "integer", str: "string"}[expected[0]]
        message = "Must be a JSON number." if float in expected else f"Must be a JSON {kind}."
    return ErrorDetail(message, code="invalid")


class JSONTypedSerializer(serializers.Serializer):
    """A request body serializer that takes JSON types exactly as the schema states."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            errors = {}
            for name, field in self.fields.items():
                if field.read_only or name not in data:
                    continue
                error = json_type_error(field, data[name])
                if error:
                    errors[name] = [error] if isinstance(error, ErrorDetail) else error
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def repeated_parameters(query: Any, names: Iterable[str]) -> dict[str, list[ErrorDetail]]:
    """The parameters of `names` given more than once in `query` (a QueryDict), each
    with its error: only the last value would be read, the others silently dropped."""
    getlist = getattr(query, "getlist", None)
    if getlist is None:
        return {}
    message = "Give this parameter once."
    return {
        name: [ErrorDetail(message, code="repeated")] for name in names if len(getlist(name)) > 1
    }


class QueryParamsSerializer(serializers.Serializer):
    """Validates query parameters as plain values: given a QueryDict, DRF treats it as
    an HTML form and silently drops a blank optional parameter (`?limit=`); here a
    blank value is validated like any other (a 400 naming it), and so is a repeated one."""

    def run_validation(self, data: Any = empty) -> Any:
        if hasattr(data, "getlist"):
            if repeated := repeated_parameters(data, self.fields):
                raise serializers.ValidationError(repeated)
            data = data.dict()
        return super().run_validation(data)
