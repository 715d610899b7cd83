"""`GET /api/v1/usage/daily`, `GET /api/v1/prices` and `/api/v1/prices/overrides`."""

from __future__ import annotations

import datetime
import re
from decimal import ROUND_HALF_EVEN, Decimal

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.cost import plain_text, usd_text
from billing.models import PRICE_DIGITS, PRICE_PLACES, CostComponent
from billing.prices import COST_UNITS, UNITS, Price
from billing.selectors import Usage, UsageDay
from voicecalls.errors import error_responses
from voicecalls.fields import JSONTypedSerializer, QueryParamsSerializer

DEFAULT_DAYS = 30
MAX_DAYS = 366
HUNDREDTH = Decimal("0.01")


class UsageDailyQuerySerializer(QueryParamsSerializer):
    # `from` is a Python keyword: the field is declared by name.
    locals()["from"] = serializers.DateField(
        required=False, help_text="First day (UTC, inclusive); default 29 days before `to`."
    )
    to = serializers.DateField(
        required=False, help_text="Last day (UTC, inclusive); default today."
    )

    def validate(self, attrs: dict) -> dict:
        end = attrs.get("to") or datetime.datetime.now(datetime.UTC).date()
        start = attrs.get("from")
        if end >= datetime.date.max or (start is None and end.toordinal() <= DEFAULT_DAYS):
            raise serializers.ValidationError({"to": ["Out of range."]})
        start = start or end - datetime.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise serializers.ValidationError({"from": ["Must be on or before `to`."]})
        if (end - start).days >= MAX_DAYS:
            raise serializers.ValidationError({"from": [f"At most {MAX_DAYS} days at once."]})
        return {"start": start, "end": end}


class UsageFiguresSerializer(serializers.Serializer):
    calls = serializers.IntegerField(min_value=0, help_text="Calls created that day.")
    minutes = serializers.DecimalField(
        max_digits=20, decimal_places=2, help_text="From start to end, summed."
    )
    cost_usd = serializers.DecimalField(
        max_digits=20, decimal_places=6, help_text="Of the calls priced so far (ended)."
    )


class WorkflowUsageSerializer(UsageFiguresSerializer):
    workflow_id = serializers.UUIDField()
    workflow_slug = serializers.CharField(
        help_text="As the workflow's latest call that day had it: a workflow renamed during "
        "the day is one entry, under its new slug."
    )


class UsageDaySerializer(UsageFiguresSerializer):
    date = serializers.DateField()
    workflows = WorkflowUsageSerializer(many=True, help_text="By slug, then id.")


class UsageDailySerializer(serializers.Serializer):
    locals()["from"] = serializers.DateField()
    to = serializers.DateField()
    days = UsageDaySerializer(many=True, help_text="Every day of the range, oldest first.")
    total = UsageFiguresSerializer()


def _figures(usage: Usage) -> dict:
    minutes = (usage.seconds / 60).quantize(HUNDREDTH, rounding=ROUND_HALF_EVEN)
    return {
        "calls": usage.calls,
        "minutes": str(minutes),
        "cost_usd": usd_text(usage.cost_usd),
    }


def usage_daily_representation(
    days: list[UsageDay], *, start: datetime.date, end: datetime.date
) -> dict:
    """`UsageDaily`: every day of the range with its workflows, and the range's total."""
    total = Usage()
    for day in days:
        total.add(day.usage)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": [
            {
                "date": day.date.isoformat(),
                **_figures(day.usage),
                "workflows": [
                    {
                        "workflow_id": str(workflow_id),
                        "workflow_slug": entry.slug,
                        **_figures(entry.usage),
                    }
                    for workflow_id, entry in day.workflows.items()
                ],
            }
            for day in days
        ],
        "total": _figures(total),
    }


_USAGE_DAILY_QUERY = UsageDailyQuerySerializer()


class UsageDailyView(APIView):
    @extend_schema(
        summary="Get usage per day",
        operation_id="usage_daily",
        description="Calls, minutes and cost per day (UTC) and per workflow, for up to "
        f"{MAX_DAYS} days; by default the last {DEFAULT_DAYS}.",
        parameters=[UsageDailyQuerySerializer],
        responses={200: UsageDailySerializer, **error_responses(400)},
    )
    def get(self, request: Request) -> Response:
        params = _USAGE_DAILY_QUERY.run_validation(request.query_params)
        days = selectors.usage_daily(organization=request.user.organization, **params)
        return Response(usage_daily_representation(days, **params))


class PriceSerializer(serializers.Serializer):
    component = serializers.ChoiceField(choices=CostComponent.choices)
    provider = serializers.CharField()
    model = serializers.CharField(help_text="`*`: the provider's models without a line.")
    unit = serializers.ChoiceField(choices=COST_UNITS)
    unit_price_usd = serializers.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES)
    origin = serializers.ChoiceField(
        choices=["platform", "organization"], help_text="The platform's table or your override."
    )
    as_of = serializers.DateField(allow_null=True)
    source = serializers.CharField(allow_null=True)


def price_representation(price: Price) -> dict:
    return {
        "component": price.component,
        "provider": price.provider,
        "model": price.model,
        "unit": price.unit,
        "unit_price_usd": plain_text(price.unit_price_usd),
        "origin": price.origin,
        "as_of": price.as_of,
        "source": price.source,
    }


class PricesView(APIView):
    @extend_schema(
        summary="List prices",
        operation_id="prices_list",
        description="The price table your calls are priced with: the platform's lines "
        "(with their date and source) and your overrides on top.",
        responses={200: PriceSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        prices = selectors.price_table(organization=request.user.organization)
        return Response([price_representation(price) for price in prices])


UNIT_PRICE_PATTERN = rf"^\d{{1,{PRICE_DIGITS - PRICE_PLACES}}}(\.\d{{1,{PRICE_PLACES}}})?$"


@extend_schema_field(
    {"type": "string", "format": "decimal", "pattern": UNIT_PRICE_PATTERN, "example": "0.0000004"}
)
class UnitPriceField(serializers.DecimalField):
    """Dollars as a plain decimal string (no sign, exponent or blanks): money stays exact
    in transit, and what the schema's pattern takes is exactly what is accepted."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES, **kwargs)

    def to_internal_value(self, data: object) -> Decimal:
        if not isinstance(data, str) or not re.fullmatch(UNIT_PRICE_PATTERN, data, re.ASCII):
            raise serializers.ValidationError(
                'A plain decimal string of dollars, e.g. "0.0000004".', code="invalid"
            )
        return super().to_internal_value(data)


class PriceOverrideSerializer(JSONTypedSerializer):
    id = serializers.UUIDField(read_only=True)
    component = serializers.ChoiceField(choices=CostComponent.choices)
    provider = serializers.RegexField(r"^[a-z0-9_.-]{1,50}$", help_text="e.g. `openai`.")
    model = serializers.RegexField(
        r"^(\*|[A-Za-z0-9_.:/@-]{1,100})$", help_text="A model name, or `*` for the others."
    )
    unit_price_usd = UnitPriceField(
        help_text="Per the component's unit (minute, token or character)."
    )
    unit = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)

    def get_unit(self, override: object) -> str:
        return UNITS[override.component]


class PriceOverridesView(APIView):
    @extend_schema(
        summary="List price overrides",
        operation_id="prices_overrides_list",
        responses={200: PriceOverrideSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        overrides = selectors.price_overrides(organization=request.user.organization)
        return Response(PriceOverrideSerializer(overrides, many=True).data)

    @extend_schema(
        summary="Set a price override",
        operation_id="prices_overrides_set",
        description="Your price for one (component, provider, model), replacing the one you "
        "set before (200) or adding it (201). Calls that end from now on use it. An "
        f"organization has at most {services.MAX_PRICE_OVERRIDES_PER_ORGANIZATION} "
        "(`limit_reached`).",
        request=PriceOverrideSerializer,
        responses={
            200: PriceOverrideSerializer,
            201: PriceOverrideSerializer,
            **error_responses(400),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = PriceOverrideSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        override, created = services.price_override_set(
            organization=request.user.organization, **serializer.validated_data
        )
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(PriceOverrideSerializer(override).data, status=code)


class PriceOverrideView(APIView):
    @extend_schema(
        summary="Delete a price override",
        operation_id="prices_overrides_destroy",
        responses={204: None, **error_responses(404)},
    )
    def delete(self, request: Request, override_id: str) -> Response:
        overrides = selectors.price_overrides(organization=request.user.organization)
        services.price_override_delete(override=get_object_or_404(overrides, pk=override_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
