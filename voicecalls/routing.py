"""URL pieces shared by every app's router."""

from __future__ import annotations

import uuid

from django.urls import register_converter

# A uuid path segment: anything else matches no route, so it is a plain 404.
UUID_PATTERN = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"


class AnyUUIDConverter:
    """`<any_uuid:name>`: a uuid spelled as the routers take it (upper case, without
    dashes), where Django's `uuid` takes lower case with dashes only: a call's stream
    was a 404 for the spelling its transcript answers."""

    regex = UUID_PATTERN

    def to_python(self, value: str) -> uuid.UUID:
        return uuid.UUID(value)

    def to_url(self, value: uuid.UUID | str) -> str:
        return str(value)


register_converter(AnyUUIDConverter, "any_uuid")
