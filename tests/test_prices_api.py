"""The price table an organization's calls are priced with (GET /api/v1/prices) and its
own overrides (/api/v1/prices/overrides)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import PriceOverride
from billing.prices import platform_prices
from billing.services import MAX_PRICE_OVERRIDES_PER_ORGANIZATION

pytestmark = pytest.mark.django_db

PRICES = "/api/v1/prices"
OVERRIDES = "/api/v1/prices/overrides"
GPT_PROMPT = {"component": "llm_prompt", "provider": "openai", "model": "gpt-4.1-mini"}


def gpt_prompt_line(prices: list[dict]) -> dict:
    (line,) = [p for p in prices if {k: p[k] for k in GPT_PROMPT} == GPT_PROMPT]
    return line


def test_every_platform_line_is_dated_and_sourced() -> None:
    for price in platform_prices().values():
        assert price.as_of and price.source and price.source.startswith("https://")
        assert price.unit_price_usd >= 0


def test_every_provider_of_the_catalog_is_priced_under_the_catalogs_name() -> None:
    """Workflows, provider keys and the worker name providers as the catalog does: the
    Mistral lines, under "mistralai", priced nobody's usage."""
    from providerkeys.catalog import PROVIDER_CATALOG

    priced = {
        (price.component.split("_")[0], price.provider) for price in platform_prices().values()
    }
    catalog = {
        (component, p) for component, providers in PROVIDER_CATALOG.items() for p in providers
    }

    assert catalog - priced == set()


def test_the_table_lists_the_platforms_lines_with_their_date_and_source(api, organization) -> None:
    prices = api.get(PRICES).json()

    assert len(prices) == len(platform_prices())
    assert next(p for p in prices if p["component"] == "stt" and p["model"] == "nova-3") == {
        "component": "stt",
        "provider": "deepgram",
        "model": "nova-3",
        "unit": "minute",
        "unit_price_usd": "0.0077",
        "origin": "platform",
        "as_of": "2026-11-01",
        "source": "https://deepgram.com/pricing",
    }


def test_an_override_is_created_then_replaced_and_shows_in_the_table(api, organization) -> None:
    created = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "0.0000003"}, format="json")
    replaced = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "0.0000002"}, format="json")

    assert (created.status_code, replaced.status_code) == (201, 200)
    body = replaced.json()
    assert body == {
        "id": created.json()["id"],
        **GPT_PROMPT,
        "unit_price_usd": "0.000000200000",
        "unit": "token",
        "created_at": body["created_at"],
    }
    line = gpt_prompt_line(api.get(PRICES).json())
    assert (line["unit_price_usd"], line["origin"], line["source"]) == (
        "0.0000002",
        "organization",
        None,
    )
    assert [o["id"] for o in api.get(OVERRIDES).json()] == [body["id"]]


def test_a_deleted_override_gives_the_platform_price_back(api, organization) -> None:
    override_id = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "1"}, format="json").json()[
        "id"
    ]

    assert api.delete(f"{OVERRIDES}/{override_id}").status_code == 204

    line = gpt_prompt_line(api.get(PRICES).json())
    assert line["origin"] == "platform"
    assert not PriceOverride.objects.exists()


def test_another_organizations_override_is_invisible_and_cannot_be_deleted(
    api, outsider_api
) -> None:
    override_id = outsider_api.post(
        OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "1"}, format="json"
    ).json()["id"]

    assert api.get(OVERRIDES).json() == []
    assert api.delete(f"{OVERRIDES}/{override_id}").status_code == 404
    assert PriceOverride.objects.count() == 1


@pytest.mark.parametrize(
    ("change", "attr"),
    [
        ({"unit_price_usd": 0.1}, "unit_price_usd"),  # a JSON number: money goes as a string
        ({"unit_price_usd": "-1"}, "unit_price_usd"),
        ({"unit_price_usd": "0.0000000000001"}, "unit_price_usd"),
        ({"unit_price_usd": "123456789"}, "unit_price_usd"),
        ({"unit_price_usd": "NaN"}, "unit_price_usd"),
        ({"unit_price_usd": "1e-5"}, "unit_price_usd"),
        ({"unit_price_usd": "+1"}, "unit_price_usd"),
        ({"unit_price_usd": " 1"}, "unit_price_usd"),
        ({"unit_price_usd": "\u0663"}, "unit_price_usd"),  # an Arabic-Indic digit
        ({"unit_price_usd": ""}, "unit_price_usd"),
        ({"component": "llm"}, "component"),
        ({"provider": "Open AI"}, "provider"),
        ({"model": "gpt 4"}, "model"),
        ({"model": "m" * 101}, "model"),
    ],
)
def test_a_bad_override_is_a_400_naming_the_field_and_nothing_is_stored(
    api, organization, change: dict, attr: str
) -> None:
    response = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "1", **change}, format="json")

    assert response.status_code == 400
    assert [e["attr"] for e in response.json()["errors"]] == [attr]
    assert not PriceOverride.objects.exists()


def test_an_organization_at_its_override_cap_can_replace_a_line_but_not_add_one(
    api, organization, outsider
) -> None:
    """Every call's cost reads all of its organization's overrides."""
    PriceOverride.objects.bulk_create(
        PriceOverride(
            organization=owner,
            component="tts",
            provider="acme",
            model=f"voice-{i}",
            unit_price_usd=Decimal("0.1"),
        )
        for owner in (organization, outsider)
        for i in range(MAX_PRICE_OVERRIDES_PER_ORGANIZATION)
    )
    replaced = {"component": "tts", "provider": "acme", "model": "voice-7", "unit_price_usd": "2"}

    added = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "1"}, format="json")
    replacing = api.post(OVERRIDES, replaced, format="json")

    assert added.status_code == 400
    assert added.json()["errors"] == [
        {
            "code": "limit_reached",
            "detail": "An organization can have at most 500 price overrides; replace or "
            "delete one.",
            "attr": None,
        }
    ]
    assert replacing.status_code == 200
    overrides = PriceOverride.objects.filter(organization=organization)
    assert overrides.count() == MAX_PRICE_OVERRIDES_PER_ORGANIZATION
    assert overrides.get(model="voice-7").unit_price_usd == Decimal("2")


def test_a_bad_override_id_is_a_404(api, organization) -> None:
    assert api.delete(f"{OVERRIDES}/not-a-uuid").status_code == 404


def test_prices_need_a_client_key(anonymous_api, agent_api) -> None:
    assert anonymous_api.get(PRICES).status_code == 401
    assert agent_api.post(OVERRIDES, {}, format="json").status_code == 403


def test_the_table_and_an_override_are_what_the_schema_says(api, organization) -> None:
    from tests.test_representations import assert_described

    override = api.post(OVERRIDES, {**GPT_PROMPT, "unit_price_usd": "0.5"}, format="json").json()

    assert_described(api.get(PRICES).json(), "Price", many=True)
    assert_described(override, "PriceOverride")
