from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework import serializers

from accounts.models import Organization
from providerkeys.catalog import PROVIDER_TYPES, providers_for
from providerkeys.models import (
    API_KEY_MAX_LENGTH,
    API_KEY_MIN_LENGTH,
    ProviderKey,
    is_printable_ascii,
)
from providerkeys.reencrypt import secrets_reencrypt

logger = logging.getLogger(__name__)

MAX_KEYS_PER_ORGANIZATION = 100


def provider_name_validate(*, provider_type: str, provider_name: str) -> None:
    """Unknown type or provider: a ValidationError naming the allowed values."""
    if provider_type not in PROVIDER_TYPES:
        message = f"Must be one of: {', '.join(PROVIDER_TYPES)}."
        raise ValidationError({"provider_type": ValidationError(message, code="invalid_choice")})
    allowed = providers_for(provider_type)
    if provider_name not in allowed:
        message = f"Unknown {provider_type} provider. Allowed: {', '.join(allowed)}."
        raise ValidationError({"provider_name": ValidationError(message, code="invalid_choice")})


def _keys_lock(*, organization: Organization) -> None:
    """Serialize every create of an organization's keys (its cap) and every change of
    its defaults on its row.

    Without it two concurrent "make this the default" requests each clear the old
    default and then both insert one: the partial unique index refuses the second
    and its client gets a 500. (A no-op on SQLite, whose writers are serialized.)
    """
    list(Organization.objects.select_for_update().filter(pk=organization.pk).values_list("pk"))


def _unset_default(*, organization: Organization, provider_type: str) -> None:
    ProviderKey.objects.filter(
        organization=organization, provider_type=provider_type, is_default=True
    ).update(is_default=False)


@transaction.atomic
def provider_key_create(
    *,
    organization: Organization,
    provider_type: str,
    provider_name: str,
    api_key: str,
    is_default: bool = False,
) -> ProviderKey:
    provider_name_validate(provider_type=provider_type, provider_name=provider_name)
    if not (
        API_KEY_MIN_LENGTH <= len(api_key) <= API_KEY_MAX_LENGTH and is_printable_ascii(api_key)
    ):
        # Never the value itself in the message: it is a secret.
        raise ValidationError(
            {
                "api_key": f"Must be {API_KEY_MIN_LENGTH} to {API_KEY_MAX_LENGTH} printable "
                "ASCII characters."
            },
            code="invalid",
        )
    _keys_lock(organization=organization)
    if ProviderKey.objects.filter(organization=organization).count() >= MAX_KEYS_PER_ORGANIZATION:
        # The list has no pages.
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_KEYS_PER_ORGANIZATION} provider keys: "
            "delete one first.",
            code="limit_reached",
        )
    if is_default:
        _unset_default(organization=organization, provider_type=provider_type)
    provider_key = ProviderKey.objects.create(
        organization=organization,
        provider_type=provider_type,
        provider_name=provider_name,
        api_key=api_key,
        last4=api_key[-4:],
        is_default=is_default,
    )
    logger.info(
        "provider key %s created for %s (%s/%s, default=%s)",
        provider_key.pk,
        organization.slug,
        provider_type,
        provider_name,
        is_default,
    )
    return provider_key


@transaction.atomic
def provider_key_update(*, provider_key: ProviderKey, is_default: bool) -> ProviderKey:
    """Make a key its type's default (unsetting the previous one) or not the default.

    Raises ProviderKey.DoesNotExist when the key was deleted meanwhile.
    """
    organization = provider_key.organization
    if is_default:
        _keys_lock(organization=organization)
        _unset_default(organization=organization, provider_type=provider_key.provider_type)
    updated = ProviderKey.objects.filter(pk=provider_key.pk).update(is_default=is_default)
    if not updated:
        raise ProviderKey.DoesNotExist("The provider key no longer exists.")
    provider_key.is_default = is_default
    logger.info("provider key %s default=%s", provider_key.pk, is_default)
    return provider_key


def provider_key_delete(*, organization: Organization, provider_key_id: object) -> bool:
    """Delete one of the organization's keys; False when there is none with that id."""
    deleted, _ = ProviderKey.objects.filter(organization=organization, pk=provider_key_id).delete()
    if deleted:
        logger.info("provider key %s deleted for %s", provider_key_id, organization.slug)
    return bool(deleted)


@dataclass(frozen=True)
class ReencryptResult:
    total: int
    under_fallback: int


def provider_keys_reencrypt(*, dry_run: bool = False) -> ReencryptResult:
    """Re-encrypt every provider key under the current CRYPTOGRAPHY_KEY
    (providerkeys.reencrypt: all or nothing, the rows locked)."""
    (column,) = secrets_reencrypt(only=[ProviderKey], dry_run=dry_run)
    return ReencryptResult(total=column.total, under_fallback=column.under_fallback)
