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
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import F

from accounts.models import RateLimitState
from voicecalls.db import bound_cursor

_TABLE = RateLimitState._meta.db_table

# Let the request through and move the key's theoretical arrival time (TAT) on by one
# interval, unless that would put it more than `limit` intervals ahead of now.
# Integer microseconds: float seconds at today's clock (~1.8e9) rounded a burst's summed
# intervals past the window, refusing its last request for limits such as 9 or 14.
RATE_HIT_SQL = f"""
INSERT INTO {_TABLE} ("key", tat_us) VALUES (%(key)s, %(now)s + %(interval)s)
ON CONFLICT ("key") DO UPDATE
SET tat_us = {{greatest}}({_TABLE}.tat_us, %(now)s) + %(interval)s
WHERE {{greatest}}({_TABLE}.tat_us, %(now)s) + %(interval)s <= %(now)s + %(window)s
RETURNING tat_us
"""

_MICROSECONDS = 1_000_000


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int  # whole seconds until a request would be let through; 0 if allowed
    # Let through: the key's arrival time it left (µs), for `rate_refund`.
    tat_us: int | None = field(default=None, compare=False)


def rate_hit(*, key: str, limit: int, window: float, now: float | None = None) -> RateDecision:
    """Count a request against `limit` per `window` seconds for `key`, if it fits.

    The interval is rounded up to a whole microsecond and the burst bounded by `limit`
    of them (at most `limit - 1` µs past the window), so a burst of `limit` always fits
    and `limit + 1` never does, whatever the limit."""
    now = time.time() if now is None else now
    if limit <= 0:  # staff set a ceiling of 0 (e.g. toll fraud): nothing gets through
        return RateDecision(allowed=False, retry_after=math.ceil(window))
    now_us = int(now * _MICROSECONDS)
    window_us = int(window * _MICROSECONDS)
    interval_us = -(-window_us // limit)  # ceiling
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    params = {"key": key, "now": now_us, "interval": interval_us, "window": interval_us * limit}
    # Bound on the server: the same text every request, so PostgreSQL keeps it prepared.
    with bound_cursor() as cursor:
        cursor.execute(RATE_HIT_SQL.format(greatest=greatest), params)
        row = cursor.fetchone()
        if row is not None:
            return RateDecision(allowed=True, retry_after=0, tat_us=row[0])
    tat_us = RateLimitState.objects.values_list("tat_us", flat=True).get(key=key)
    wait_us = tat_us + interval_us - now_us - interval_us * limit
    return RateDecision(allowed=False, retry_after=max(1, math.ceil(wait_us / _MICROSECONDS)))


def rate_refund(
    *, key: str, limit: int, window: float, hit_tat_us: int, now: float | None = None
) -> None:
    """Give back what a request `rate_hit` let through (leaving `hit_tat_us`) still holds
    of the rate: it made nothing (a replay of a create done before). That is its
    interval, less what has elapsed of it since: a slot already run out holds nothing,
    and taking an interval back then would free another request's."""
    now_us = int((time.time() if now is None else now) * _MICROSECONDS)
    if limit <= 0:
        return
    interval_us = -(-int(window * _MICROSECONDS) // limit)
    held_us = min(interval_us, hit_tat_us - now_us)
    if held_us > 0:
        RateLimitState.objects.filter(key=key).update(tat_us=F("tat_us") - held_us)
