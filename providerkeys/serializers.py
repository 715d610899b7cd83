from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import get_error_detail

from providerkeys.catalog import ALL_PROVIDERS, PROVIDER_CATALOG, PROVIDER_TYPES
from providerkeys.models import (
    API_KEY_MAX_LENGTH,
    API_KEY_MIN_LENGTH,
    ProviderType,
)
from providerkeys.services import provider_name_validate
from voicecalls.fields import JSONTypedSerializer
from voicecalls.schema import STRIPPED_CHARS

_CATALOG_TEXT = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in PROVIDER_CATALOG.items())


class StrictBooleanField(serializers.BooleanField):
    """Only JSON `true`/`false`: DRF's own also takes "yes", "on", 1, "1"..."""

    default_error_messages = {"invalid": "Must be a JSON boolean (true or false)."}

    def to_internal_value(self, data: object) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid")


_STRIPPED = rf"[{STRIPPED_CHARS}]"


class SecretKeyField(serializers.CharField):
    """A write-only secret of printable ASCII. Errors say what is wrong, never echo it."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(write_only=True, **kwargs)
        # A validator, not a check in code: the schema states it as the field's pattern.
        # It refuses NUL too: DRF's own NUL validator would only say so twice. Surrounding
        # whitespace (trimmed before it runs) is allowed, as clients send it.
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]
        self.validators.append(
            RegexValidator(
                rf"^{_STRIPPED}*[ -~]*[!-~][ -~]*{_STRIPPED}*\Z",
                message="Must contain only printable ASCII characters.",
                code="invalid_characters",
            )
        )

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):  # DRF's CharField would take 12345678 as "12345678"
            self.fail("invalid")
        return super().to_internal_value(data)


# Every provider of the catalog; which ones a `provider_type` takes is a cross-field
# rule (validate() below) the schema does not state.
@extend_schema_field({"type": "string", "enum": list(ALL_PROVIDERS)})
class ProviderNameField(serializers.CharField):
    pass


class ProviderKeySerializer(serializers.Serializer):
    """A provider key as the API shows it: never the key itself, only its last 4 characters."""

    id = serializers.UUIDField()
    provider_type = serializers.ChoiceField(choices=ProviderType.choices)
    provider_name = serializers.CharField()
    is_default = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    masked_key = serializers.CharField(
        help_text="At most the last 4 characters of the key, e.g. `••••1234`."
    )


class ProviderKeyListSerializer(serializers.Serializer):
    items = ProviderKeySerializer(many=True)


class ProviderKeyCreateSerializer(JSONTypedSerializer):
    provider_type = serializers.ChoiceField(
        choices=ProviderType.choices,
        error_messages={"invalid_choice": f"Must be one of: {', '.join(PROVIDER_TYPES)}."},
        help_text="The component the key is for.",
    )
    provider_name = ProviderNameField(
        max_length=50,
        # Raised by validate(), which knows the type; listed here for the schema.
        error_messages={"invalid_choice": "Unknown provider for this type."},
        help_text=f"A provider of that type. {_CATALOG_TEXT}.",
    )
    api_key = SecretKeyField(
        min_length=API_KEY_MIN_LENGTH,
        max_length=API_KEY_MAX_LENGTH,
        help_text=(
            "The provider's API key: 8 to 512 printable ASCII characters (surrounding "
            "whitespace is removed). Write-only: responses show only `masked_key`."
        ),
    )
    is_default = StrictBooleanField(
        default=False,
        help_text="Make this the organization's default key for its type (the previous "
        "default, if any, stops being one).",
    )

    def validate(self, attrs: dict) -> dict:
        try:
            provider_name_validate(
                provider_type=attrs["provider_type"], provider_name=attrs["provider_name"]
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(get_error_detail(exc)) from exc
        return attrs


IMMUTABLE_FIELDS = ("provider_type", "provider_name", "api_key")


class ProviderKeyUpdateSerializer(JSONTypedSerializer):
    """Only `is_default` changes: a key is replaced by deleting it and creating another,
    so a request that tries to change the rest is refused rather than half-applied."""

    is_default = StrictBooleanField(
        required=False,
        help_text="true: make this the default key for its type (unsetting the previous "
        "default); false: stop it being the default.",
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping) and (fixed := [n for n in IMMUTABLE_FIELDS if n in data]):
            message = "Cannot be changed: delete this provider key and create a new one."
            raise serializers.ValidationError(
                {name: [ErrorDetail(message, code="immutable")] for name in fixed}
            )
        return super().to_internal_value(data)
