"""The keyed hash an erasure's audit record keeps instead of the user id."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.utils.crypto import salted_hmac

# Django's salted_hmac: HMAC-SHA256 keyed by SHA-256(this salt + SECRET_KEY), a key of
# its own derived from the deployment's secret (never the secret itself).
_KEY_SALT = "voicecalls.privacy.erasure-user-id"


def user_id_hash(*, organization_id: UUID, user_id: str, secret: str | None = None) -> str:
    """Hex HMAC-SHA256 of the organization and the user id. With the organization in it,
    one person's hashes in two organizations differ, so audit records never link them."""
    value = f"{organization_id}:{user_id}"
    return salted_hmac(_KEY_SALT, value, secret=secret, algorithm="sha256").hexdigest()


def user_id_hashes(*, organization_id: UUID, user_id: str) -> list[str]:
    """The hash under SECRET_KEY and under each SECRET_KEY_FALLBACKS: what records made
    before a key rotation hold, so staff can still find a user's erasures."""
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return [
        user_id_hash(organization_id=organization_id, user_id=user_id, secret=secret)
        for secret in secrets
    ]
