"""Rate limits in one statement, shared by every process and host: GCRA (the generic
cell rate algorithm) over a row per limited key in the database.

`limit` requests per `window` seconds means one request every `window / limit`
seconds, with bursts of up to `limit` at once. Unlike a fixed window, there is no
boundary at which twice the limit gets through; unlike a list of timestamps, each
request reads and writes one number. A refused request changes nothing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.db import connection

from accounts.models import RateLimitState
from voicecalls.db import bound_cursor

_TABLE = RateLimitState._meta.db_table

# Let the request through and move the key's theoretical arrival time (TAT) on by one
# interval, unless that would put it more than the window ahead of now.
RATE_HIT_SQL = f"""
INSERT INTO {_TABLE} ("key", tat) VALUES (%(key)s, %(now)s + %(interval)s)
ON CONFLICT ("key") DO UPDATE
SET tat = {{greatest}}({_TABLE}.tat, %(now)s) + %(interval)s
WHERE {{greatest}}({_TABLE}.tat, %(now)s) + %(interval)s <= %(now)s + %(window)s
RETURNING tat
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int  # whole seconds until a request would be let through; 0 if allowed


def rate_hit(*, key: str, limit: int, window: float, now: float | None = None) -> RateDecision:
    """Count a request against `limit` per `window` seconds for `key`, if it fits."""
    now = time.time() if now is None else now
    if limit <= 0:  # staff set a ceiling of 0 (e.g. toll fraud): nothing gets through
        return RateDecision(allowed=False, retry_after=math.ceil(window))
    interval = window / limit
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    # A microsecond of slack: at today's clock (~1.8e9 s) adding `interval` `limit`
    # times rounds past `now + window`, and the burst's last request was refused.
    params = {"key": key, "now": now, "interval": interval, "window": window + 1e-6}
    # Bound on the server: the same text every request, so PostgreSQL keeps it prepared.
    with bound_cursor() as cursor:
        cursor.execute(RATE_HIT_SQL.format(greatest=greatest), params)
        if cursor.fetchone() is not None:
            return RateDecision(allowed=True, retry_after=0)
    tat = RateLimitState.objects.values_list("tat", flat=True).get(key=key)
    return RateDecision(allowed=False, retry_after=max(1, math.ceil(tat + interval - now - window)))
