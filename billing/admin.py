from __future__ import annotations

from django.contrib import admin

from billing.models import PriceOverride


@admin.register(PriceOverride)
class PriceOverrideAdmin(admin.ModelAdmin):
    """An organization's own prices (the platform's table is billing/prices.csv)."""

    list_display = [
        "organization",
        "component",
        "provider",
        "model",
        "unit_price_usd",
        "created_at",
    ]
    list_filter = ["component", "organization"]
    list_select_related = ["organization"]
    search_fields = ["organization__slug", "provider", "model"]
    fields = ["organization", "component", "provider", "model", "unit_price_usd"]
