"""Validators of the organization's settings."""

from __future__ import annotations

import phonenumbers
from django.core.exceptions import ValidationError


def region_codes_validator(value: object) -> None:
    """A list of the ISO 3166 region codes `phonenumbers` knows, upper case ("US"): the
    guard compares them as they are, so "us" would silently allow nothing."""
    if not isinstance(value, list):
        raise ValidationError('A list of region codes, e.g. ["US", "CA"].', code="invalid")
    unknown = [
        code
        for code in value
        if not isinstance(code, str) or code not in phonenumbers.SUPPORTED_REGIONS
    ]
    if unknown:
        raise ValidationError(
            "Not ISO 3166 region codes (upper case): %(codes)s.",
            code="invalid",
            params={"codes": ", ".join(map(str, unknown))},
        )
