"""Provider keys in the admin: the plaintext is write-only, masked everywhere after.

Saving goes through the services, so the admin keeps the one-default rule (and its
row lock) like the API does.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework import serializers

from providerkeys import services
from providerkeys.catalog import PROVIDER_CATALOG
from providerkeys.models import (
    API_KEY_MAX_LENGTH,
    API_KEY_MIN_LENGTH,
    ProviderKey,
    is_printable_ascii,
)
from voicecalls.admin_forms import SaveRefused, SaveRefusedAsMessage


class _DefaultsKeptByServiceMixin:
    """The one-default constraint is kept by the service, which unsets the previous
    default first; validating it on the form would refuse every new default."""

    def _get_validation_exclusions(self) -> set[str]:
        return {*super()._get_validation_exclusions(), "is_default"}


class ProviderKeyAddForm(_DefaultsKeptByServiceMixin, forms.ModelForm):
    provider_name = forms.ChoiceField(
        choices=[
            (kind, [(name, name) for name in names]) for kind, names in PROVIDER_CATALOG.items()
        ],
        help_text="Must be a provider of the chosen type.",
    )
    # Never rendered back, not even when the form comes back with errors.
    api_key = forms.CharField(
        label="API key",
        min_length=API_KEY_MIN_LENGTH,
        max_length=API_KEY_MAX_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Only its last 4 characters are ever shown again.",
    )

    class Meta:
        model = ProviderKey
        fields = ["organization", "provider_type", "provider_name", "api_key", "is_default"]

    def clean_api_key(self) -> str:
        value = self.cleaned_data["api_key"]
        if not is_printable_ascii(value):
            raise ValidationError("Must contain only printable ASCII characters.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("provider_type") and cleaned.get("provider_name"):
            try:
                services.provider_name_validate(
                    provider_type=cleaned["provider_type"], provider_name=cleaned["provider_name"]
                )
            except ValidationError as exc:
                self.add_error(None, exc)
        return cleaned


class ProviderKeyChangeForm(_DefaultsKeptByServiceMixin, forms.ModelForm):
    class Meta:
        model = ProviderKey
        fields = ["is_default"]


@admin.register(ProviderKey)
class ProviderKeyAdmin(SaveRefusedAsMessage, admin.ModelAdmin):
    form = ProviderKeyChangeForm
    add_form = ProviderKeyAddForm
    list_display = [
        "provider_type",
        "provider_name",
        "masked_key",
        "is_default",
        "organization",
        "created_at",
    ]
    list_filter = ["provider_type", "provider_name", "is_default"]
    list_select_related = ["organization"]
    search_fields = ["=id", "organization__slug", "provider_name"]
    ordering = ["-created_at", "-id"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderKey]:
        # Pages show only the mask: never load (or decrypt) the ciphertext.
        return super().get_queryset(request).defer("api_key")

    def get_fields(self, request: HttpRequest, obj: ProviderKey | None = None) -> list[str]:
        if obj is None:
            return list(ProviderKeyAddForm.Meta.fields)
        return [
            "organization",
            "provider_type",
            "provider_name",
            "masked_key",
            "is_default",
            "created_at",
            "id",
        ]

    def get_readonly_fields(
        self, request: HttpRequest, obj: ProviderKey | None = None
    ) -> list[str]:
        if obj is None:
            return []
        return ["organization", "provider_type", "provider_name", "masked_key", "created_at", "id"]

    def get_form(
        self, request: HttpRequest, obj: ProviderKey | None = None, **kwargs: Any
    ) -> type[forms.ModelForm]:
        kwargs["form"] = self.add_form if obj is None else self.form
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="Key")
    def masked_key(self, obj: ProviderKey) -> str:
        return obj.masked_key

    def save_model(
        self, request: HttpRequest, obj: ProviderKey, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            if "is_default" in form.changed_data:
                try:
                    services.provider_key_update(provider_key=obj, is_default=obj.is_default)
                except ProviderKey.DoesNotExist as exc:
                    raise SaveRefused("The key was deleted meanwhile: nothing was saved.") from exc
            return
        try:
            created = services.provider_key_create(
                organization=obj.organization,
                provider_type=obj.provider_type,
                provider_name=obj.provider_name,
                api_key=form.cleaned_data["api_key"],
                is_default=obj.is_default,
            )
        except serializers.ValidationError as exc:  # the organization's cap
            raise SaveRefused(" ".join(str(detail) for detail in exc.detail)) from exc
        # The admin goes on with `obj` (history entry, redirect): make it the saved row.
        obj.pk, obj.last4, obj.created_at = created.pk, created.last4, created.created_at
        obj._state.adding, obj._state.db = False, created._state.db
