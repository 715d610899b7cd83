"""Serializer fields for phone destinations, shared by workflows (transfer tools) and the
transfer endpoints: one spelling of what a transfer may name."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from telephony.numbers import TRANSFER_DESTINATION_PATTERN, is_transfer_destination

TRANSFER_DESTINATION_MAX = 260


@extend_schema_field(
    {
        "type": "string",
        "pattern": TRANSFER_DESTINATION_PATTERN,
        "maxLength": TRANSFER_DESTINATION_MAX,
        "example": "+14155550188",
    }
)
class TransferDestinationField(serializers.CharField):
    """An E.164 number (`+14155550188`) or a SIP URI (`sip:desk@pbx.example.com`)."""

    default_error_messages = {"invalid": "Must be an E.164 number or a sip: URI."}

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", TRANSFER_DESTINATION_MAX)
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        if not is_transfer_destination(value):
            self.fail("invalid")
        return value
