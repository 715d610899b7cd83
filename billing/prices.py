"""The price table: `prices.csv` shipped with the code, and an organization's overrides
on top of it."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from billing.models import PriceOverride

PRICES_FILE = Path(__file__).with_name("prices.csv")
ANY_MODEL = "*"
UNITS = {
    "stt": "minute",
    "llm_prompt": "token",
    "llm_completion": "token",
    "llm_cached": "token",
    "tts": "character",
    "room": "minute",
    "sip": "minute",
}
COST_UNITS = sorted(set(UNITS.values()))


@dataclass(frozen=True)
class Price:
    component: str
    provider: str
    model: str
    unit: str
    unit_price_usd: Decimal
    # `platform` (prices.csv, with its date and source) or `organization` (an override).
    origin: str
    as_of: str | None = None
    source: str | None = None


Key = tuple[str, str, str]


@functools.cache
def platform_prices() -> dict[Key, Price]:
    """prices.csv, by (component, provider, model); read once per process."""
    with PRICES_FILE.open(newline="") as file:
        lines = (line for line in file if not line.startswith("#"))
        rows = list(csv.DictReader(lines))
    prices = {}
    for row in rows:
        if UNITS[row["component"]] != row["unit"]:
            raise ValueError(
                f"prices.csv: {row['component']} is priced per {UNITS[row['component']]}"
            )
        price = Price(
            component=row["component"],
            provider=row["provider"],
            model=row["model"],
            unit=row["unit"],
            unit_price_usd=Decimal(row["unit_price_usd"]),
            origin="platform",
            as_of=row["as_of"],
            source=row["source"],
        )
        prices[(price.component, price.provider, price.model)] = price
    return prices


def organization_prices(*, organization_id: object) -> dict[Key, Price]:
    """The platform's table with the organization's overrides on top (one query)."""
    prices = dict(platform_prices())
    overrides = PriceOverride.objects.filter(organization_id=organization_id).values_list(
        "component", "provider", "model", "unit_price_usd"
    )
    for component, provider, model, unit_price in overrides:
        prices[(component, provider, model)] = Price(
            component=component,
            provider=provider,
            model=model,
            unit=UNITS[component],
            unit_price_usd=unit_price,
            origin="organization",
        )
    return prices


def price_for(prices: dict[Key, Price], component: str, provider: str, model: str) -> Price | None:
    """The line for this model, else the provider's `*` line, else None (not priced).
    An organization's `*` line beats the platform's line for a specific model only when
    the organization set no line for that model either: overrides are looked up first."""
    exact = prices.get((component, provider, model))
    fallback = prices.get((component, provider, ANY_MODEL))
    if exact is not None and fallback is not None:
        if fallback.origin == "organization" and exact.origin == "platform":
            return fallback
    return exact or fallback
