from __future__ import annotations

import json
from typing import IO, Any

import orjson
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from voicecalls.json_numbers import fits_64_bits

# orjson reads an integer beyond 64 bits as a float, silently changing the customer's
# number; such a literal has at least 19 digits in a row. Found by mapping every digit
# to "9" and searching for nineteen: a regular expression's scan cost more than the
# parse itself on an agent's batch (bench/README.md).
_DIGITS_AS_NINES = bytes.maketrans(b"012345678", b"999999999")
_LONG_DIGITS = b"9" * 19


def _int_in_64_bits(text: str) -> int:
    value = int(text)
    if not fits_64_bits(value):
        raise ValueError(f"the integer {text[:40]} does not fit in 64 bits")
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on orjson: faster, and a nesting limit (1024) that ends in a
    clean 400 where the standard library would blow the recursion limit (a 500).
    Integers beyond 64 bits are a 400 rather than a float."""

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        raw = stream.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        if _LONG_DIGITS in raw.translate(_DIGITS_AS_NINES):
            # Rare: only then read the integers exactly (orjson has bounded the depth).
            try:
                json.loads(raw, parse_int=_int_in_64_bits)
            except ValueError as exc:
                raise ParseError(f"JSON parse error - {exc}") from exc
            except RecursionError as exc:
                raise ParseError("JSON parse error - nested too deeply") from exc
        return data
