"""Phone numbers: strict E.164 parsing with `phonenumbers`, and masking for logs."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneNumberType, shortnumberinfo
from rest_framework.exceptions import ErrorDetail

# E.164 as written: "+", a country code not starting with 0, at most 15 digits, nothing
# else (no letters, spaces or punctuation: phonenumbers would read "1-800-FLOWERS").
E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"
_E164 = re.compile(E164_PATTERN)
# Where a call may be transferred: an E.164 number, or a SIP URI (a PBX, a queue), which
# the guard cannot judge and so must be listed explicitly in a workflow's transfer tool.
# The user part in printable ASCII without space, `"`, `<`, `>` or `@` (anything else is
# percent-encoded in a URI), spelled as ranges so Python and JSON Schema read it alike.
# A SIP host: a DNS name or IPv4 address (labels of 1 to 63 letters, digits or inner
# hyphens), and a port from 1 to 65535 without leading zeros, as JSON Schema can say it.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
SIP_HOST_PATTERN = rf"{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?"
SIP_URI_PATTERN = rf"sips?:[!#-;=?A-~]{{1,64}}@{SIP_HOST_PATTERN}"
TRANSFER_DESTINATION_PATTERN = rf"^(\+[1-9][0-9]{{1,14}}|{SIP_URI_PATTERN})$"
_TRANSFER_DESTINATION = re.compile(TRANSFER_DESTINATION_PATTERN)


def is_transfer_destination(text: str) -> bool:
    """An E.164 number or a SIP URI, the whole text (Python's `$` would let a trailing
    newline through)."""
    return _TRANSFER_DESTINATION.fullmatch(text) is not None


def is_sip_uri(destination: str) -> bool:
    return destination.startswith(("sip:", "sips:"))


# Numbers whose caller pays the callee (or shares the cost): toll fraud's favourites.
_COSTLY_TYPES = {PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST}


class InvalidNumber(Exception):
    """Not a number voicecalls will dial; `code` and `detail` say why."""

    def __init__(self, detail: str, code: str) -> None:
        super().__init__(detail)
        self.detail = ErrorDetail(detail, code=code)


def number_parse(text: str) -> phonenumbers.PhoneNumber:
    """A valid E.164 number, or InvalidNumber."""
    if not isinstance(text, str) or not _E164.fullmatch(text):
        raise InvalidNumber(
            "Must be an E.164 phone number: + and up to 15 digits, e.g. +14155550123.",
            "invalid_phone_number",
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber("Not a phone number.", "invalid_phone_number") from exc
    region = phonenumbers.region_code_for_number(number)
    national = phonenumbers.national_significant_number(number)
    if region and shortnumberinfo.is_emergency_number(national, region):
        raise InvalidNumber("Emergency numbers cannot be called.", "emergency_number")
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber("Not a valid phone number.", "invalid_phone_number")
    return number


# A number as people write it: digits, perhaps a leading +, spaces, dashes, dots, brackets.
_TYPED_NUMBER = re.compile(r"\+?[0-9][0-9 ().-]*")


def number_typed_e164(text: str) -> str | None:
    """A whole number as staff type it (`+1 415-555 0123`, `14155550123`: the country
    code always, the + perhaps not) in E.164, or None when it is not one."""
    text = text.strip()
    if not _TYPED_NUMBER.fullmatch(text):
        return None
    try:
        number = phonenumbers.parse(text if text.startswith("+") else f"+{text}", None)
    except phonenumbers.NumberParseException:
        return None
    return number_e164(number) if phonenumbers.is_possible_number(number) else None


def number_e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def number_is_costly(number: phonenumbers.PhoneNumber) -> bool:
    return phonenumbers.number_type(number) in _COSTLY_TYPES


def number_region(number: phonenumbers.PhoneNumber) -> str | None:
    return phonenumbers.region_code_for_number(number)


def number_masked(text: str) -> str:
    """For info logs: the country code and the last two digits, the rest starred."""
    try:
        number = phonenumbers.parse(text, None)
        prefix = f"+{number.country_code}"
    except phonenumbers.NumberParseException:
        prefix = "+"
    digits = "".join(char for char in str(text) if char.isdigit())
    return f"{prefix}{'*' * max(0, len(digits) - len(prefix) - 1)}{digits[-2:]}"
