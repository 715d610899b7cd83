from __future__ import annotations

from django import forms
from django.contrib import admin
from rest_framework.exceptions import ValidationError as APIValidationError

from billing.api import PriceOverrideSerializer
from billing.models import PriceOverride
from billing.services import price_override_room_check


class PriceOverrideForm(forms.ModelForm):
    """The API's checks (`POST /prices/overrides`), so staff store nothing it refuses:
    no negative price, provider and model names as usage reports spell them."""

    class Meta:
        model = PriceOverride
        fields = ["organization", "component", "provider", "model", "unit_price_usd"]

    def clean(self) -> dict:
        data = super().clean()
        price = data.get("unit_price_usd")
        checked = PriceOverrideSerializer(
            data={
                "component": data.get("component") or "",
                "provider": data.get("provider") or "",
                "model": data.get("model") or "",
                "unit_price_usd": format(price, "f") if price is not None else "",
            }
        )
        if not checked.is_valid():
            for name, errors in checked.errors.items():
                if name in self.fields and name not in self.errors:
                    self.add_error(name, [str(error) for error in errors])
        organization = data.get("organization")
        if organization is not None:
            # The API's cap too (checked inside the admin's save transaction).
            same_line = PriceOverride.objects.filter(organization=organization, pk=self.instance.pk)
            try:
                price_override_room_check(organization=organization, replacing=same_line)
            except APIValidationError as exc:
                self.add_error("organization", [str(error) for error in exc.detail])
        return data


@admin.register(PriceOverride)
class PriceOverrideAdmin(admin.ModelAdmin):
    """An organization's own prices (the platform's table is billing/prices.csv)."""

    form = PriceOverrideForm

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
