"""Text from other systems (a model's answer, LiveKit's or a carrier's error text), made
storable in a text column."""

from __future__ import annotations

import re

# What no text column stores (JSON lets both in): U+0000 (PostgreSQL) and lone
# surrogates (neither database: they are no UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with what no column stores replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)
