"""Serializer fields shared by the API's apps."""

from __future__ import annotations

import json

from rest_framework import serializers


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


class BoundedJSONObjectField(serializers.JSONField):
    """A JSON object (not a list or scalar) of at most `max_bytes` once serialized and
    at most `max_depth` levels deep."""

    default_error_messages = {
        "not_an_object": "Must be a JSON object.",
        "too_large": "Must be at most {max_bytes} bytes as JSON.",
        "too_deep": "Must be nested at most {max_depth} levels deep.",
    }

    def __init__(self, *, max_bytes: int, max_depth: int = 8, **kwargs: object) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> dict:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_an_object")
        if json_depth(value) > self.max_depth:
            self.fail("too_deep", max_depth=self.max_depth)
        if len(json.dumps(value, separators=(",", ":")).encode()) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        return value
