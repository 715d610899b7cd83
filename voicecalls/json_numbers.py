"""Numbers in the JSON the API takes and stores: the 64-bit integers its parser reads
(voicecalls/parsers.py), and what PostgreSQL's jsonb makes of floats (it prints them in
full, `1e-300` as `0.000…1`, and `1e20` as an integer the parser refuses).

Standard library only: the agent worker imports it to send what the API takes.
"""

from __future__ import annotations

from decimal import Decimal

INT_MIN, INT_END = -(2**63), 2**64


def fits_64_bits(number: int | float) -> bool:
    return INT_MIN <= number < INT_END


def json_float_growth(value: object) -> int | None:
    """The bytes PostgreSQL's jsonb adds to a JSON value by printing its floats in full;
    None when a float would come back as an integer beyond 64 bits."""
    growth, stack = 0, [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            if not fits_64_bits(node):
                return None
            sent = repr(node)
            if "e" in sent:
                growth += len(format(Decimal(sent), "f")) - len(sent)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return growth
