from __future__ import annotations

from django.db.models import CharField, QuerySet, Value
from django.db.models.functions import Concat

from accounts.models import Organization
from providerkeys.models import MASK, ProviderKey

# Everything but the ciphertext: lists and lookups never decrypt.
MASKED_FIELDS = (
    "id",
    "organization_id",
    "provider_type",
    "provider_name",
    "last4",
    "is_default",
    "created_at",
)


def provider_key_queryset(*, organization: Organization) -> QuerySet[ProviderKey]:
    """One organization's keys, ciphertext deferred: the only way views reach them."""
    return ProviderKey.objects.filter(organization=organization).only(*MASKED_FIELDS)


def provider_key_list(*, organization: Organization) -> QuerySet:
    """The organization's keys as masked dicts, newest first (no model instances: a
    tenth of the time per row)."""
    return (
        ProviderKey.objects.filter(organization=organization)
        .annotate(masked_key=Concat(Value(MASK), "last4", output_field=CharField()))
        .order_by("-created_at", "-id")
        .values("id", "provider_type", "provider_name", "is_default", "created_at", "masked_key")
    )


def provider_key_for(
    *, organization: Organization, provider_type: str, provider_name: str
) -> ProviderKey | None:
    """The key a call's `provider_type` component runs on, or None.

    The organization's default key of that type when its provider matches, else the
    newest key for that provider (and type). One query; `api_key` decrypts on access.
    """
    return (
        ProviderKey.objects.filter(
            organization=organization, provider_type=provider_type, provider_name=provider_name
        )
        .order_by("-is_default", "-created_at", "-id")
        .first()
    )
