"""Serializer fields shared by the API's apps."""

from __future__ import annotations

import json

from rest_framework import serializers


class BoundedJSONObjectField(serializers.JSONField):
    """A JSON object (not a list or scalar) of at most `max_bytes` once serialized."""

    default_error_messages = {
        "not_an_object": "Must be a JSON object.",
        "too_large": "Must be at most {max_bytes} bytes as JSON.",
    }

    def __init__(self, *, max_bytes: int, **kwargs: object) -> None:
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> dict:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        if len(json.dumps(value, separators=(",", ":")).encode()) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        return value
