"""A call's cost: its usage and timings priced by the table, in `Decimal`.

Amounts are exact products (quantity × unit price, 34 significant digits); the total is
their exact sum, rounded once to a millionth of a dollar. The breakdown shows each line
rounded the same way for reading, so its lines may differ from the total in the last
digit; the total is never a sum of rounded lines.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal

from billing.models import COST_DIGITS, COST_PLACES
from billing.prices import Key, Price, price_for

logger = logging.getLogger(__name__)

EXACT = Context(prec=34)
MICRO = Decimal(1).scaleb(-COST_PLACES)
SECONDS_PER_MINUTE = 60


@dataclass(frozen=True)
class Line:
    component: str
    provider: str
    model: str
    # What was measured (seconds, tokens, characters), and how many of it make one
    # `unit` (60 seconds a minute): the quantity is their quotient.
    measured: Decimal
    unit: str
    price: Price | None
    per: int = 1
    # What used it: the call (`call`) or its post-call analysis (`analysis`).
    phase: str = "call"

    @property
    def quantity(self) -> Decimal:
        return EXACT.divide(self.measured, Decimal(self.per))

    @property
    def amount(self) -> Decimal | None:
        """measured × unit price ÷ per: multiplied first, so an amount that ends (as
        60.035 s at $0.006 a minute, $0.0060035) is exact, not 1.000583333... minutes
        cut at 34 digits times the price, a hair under half a millionth."""
        if self.price is None:
            return None
        return EXACT.divide(
            EXACT.multiply(self.measured, self.price.unit_price_usd), Decimal(self.per)
        )


# The largest total a call's cost can hold (billing.models.CallCost.total_usd).
COST_MAX = Decimal(10) ** (COST_DIGITS - COST_PLACES) - MICRO


@dataclass(frozen=True)
class Cost:
    # None when the total is beyond COST_MAX (prices set absurdly high): not priced.
    total_usd: Decimal | None
    breakdown: list[dict]
    # False when some usage has no price (its amount is null and not in the total).
    complete: bool


def _seconds(seconds: float | Decimal) -> Decimal:
    return Decimal(str(seconds))


def _item_lines(item: dict, prices: dict[Key, Price], phase: str = "call") -> list[Line]:
    """One usage item (a provider's model, cumulative) as priced lines."""
    provider, model = item["provider"], item["model"]

    def line(
        component: str, measured: Decimal, unit: str, price: Price | None = None, per: int = 1
    ) -> Line:
        price = price or price_for(prices, component, provider, model)
        return Line(component, provider, model, measured, unit, price, per, phase)

    if item["component"] == "stt":
        seconds = _seconds(item.get("audio_seconds", 0))
        return [line("stt", seconds, "minute", per=SECONDS_PER_MINUTE)]
    if item["component"] == "tts":
        return [line("tts", Decimal(item.get("characters", 0)), "character")]
    cached = item.get("cached_tokens", 0)
    prompt_price = price_for(prices, "llm_prompt", provider, model)
    # Cached tokens without a price of their own cost what prompt tokens do.
    cached_price = price_for(prices, "llm_cached", provider, model) or prompt_price
    return [
        line("llm_prompt", Decimal(max(item.get("prompt_tokens", 0) - cached, 0)), "token"),
        line("llm_cached", Decimal(cached), "token", cached_price),
        line("llm_completion", Decimal(item.get("completion_tokens", 0)), "token"),
    ]


def seconds_exact(duration: datetime.timedelta) -> Decimal:
    """A duration's seconds to the microsecond (`total_seconds()` is a float: 60.06 s
    came out 60.0600000000000023, and half a millionth of a dollar rounded up)."""
    whole = duration.days * 86400 + duration.seconds
    return Decimal(whole) + Decimal(duration.microseconds).scaleb(-6)


def _time_lines(
    *,
    started_at: datetime.datetime | None,
    ended_at: datetime.datetime | None,
    sip_direction: str | None,
    prices: dict[Key, Price],
) -> list[Line]:
    if started_at is None or ended_at is None or ended_at <= started_at:
        return []
    seconds = seconds_exact(ended_at - started_at)
    lines = [
        Line(
            "room",
            "livekit",
            "room",
            seconds,
            "minute",
            price_for(prices, "room", "livekit", "room"),
            SECONDS_PER_MINUTE,
        )
    ]
    if sip_direction is not None:
        price = price_for(prices, "sip", "livekit", sip_direction)
        lines.append(
            Line("sip", "livekit", sip_direction, seconds, "minute", price, SECONDS_PER_MINUTE)
        )
    return lines


def usd_text(value: Decimal) -> str:
    """Dollars rounded (half to even) to a millionth, e.g. "0.001680"."""
    return str(value.quantize(MICRO, rounding=ROUND_HALF_EVEN))


def plain_text(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 1200 tokens, "0.0000004" USD."""
    return format(value.normalize(), "f")


_ITEM_KEY = ("component", "provider", "model")


def usage_summed(reports: Iterable[list[dict]]) -> list[dict]:
    """Usage reports of one call's agent sessions as one: an item per component,
    provider and model, its quantities summed (audio to the millisecond, as reported)."""
    items: dict[tuple[str, str, str], dict] = {}
    for report in reports:
        for item in report:
            key = (item["component"], item["provider"], item["model"])
            summed = items.setdefault(key, dict(zip(_ITEM_KEY, key, strict=True)))
            for name, amount in item.items():
                if name not in _ITEM_KEY:
                    summed[name] = summed.get(name, 0) + amount
    for item in items.values():
        if "audio_seconds" in item:
            item["audio_seconds"] = round(item["audio_seconds"], 3)
    return list(items.values())


def call_cost_compute(
    *,
    usage: list[dict],
    started_at: datetime.datetime | None,
    ended_at: datetime.datetime | None,
    prices: dict[Key, Price],
    sip_direction: str | None = None,
    analysis_usage: Iterable[dict] = (),
) -> Cost:
    """The cost of a call: the usage the agent reported (cumulative, per provider and
    model), room minutes (and SIP minutes for a phone call) from its timings, then its
    post-call analysis's tokens, on lines of their own (`phase` `analysis`), priced with
    the same table's lines as the conversation's."""
    lines = [line for item in usage for line in _item_lines(item, prices)] + _time_lines(
        started_at=started_at, ended_at=ended_at, sip_direction=sip_direction, prices=prices
    )
    lines += [line for item in analysis_usage for line in _item_lines(item, prices, "analysis")]
    lines = [line for line in lines if line.quantity > 0]
    amounts = [line.amount for line in lines]
    total = sum((a for a in amounts if a is not None), Decimal(0))
    breakdown = [
        {
            "component": line.component,
            "provider": line.provider,
            "model": line.model,
            "quantity": plain_text(line.quantity.quantize(MICRO, rounding=ROUND_HALF_EVEN)),
            "unit": line.unit,
            "unit_price_usd": None if line.price is None else plain_text(line.price.unit_price_usd),
            "amount_usd": None if amount is None else usd_text(amount),
            "phase": line.phase,
        }
        for line, amount in zip(lines, amounts, strict=True)
    ]
    total = total.quantize(MICRO, rounding=ROUND_HALF_EVEN)
    if total > COST_MAX:
        logger.warning("a call's cost of %s USD is beyond what is stored: not priced", total)
        return Cost(total_usd=None, breakdown=breakdown, complete=False)
    return Cost(total_usd=total, breakdown=breakdown, complete=all(a is not None for a in amounts))
