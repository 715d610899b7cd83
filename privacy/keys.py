"""The keyed hashes erasure keeps instead of personal data: the user id in an erasure's
audit record, and an inbound call's room name (LiveKit made it from the caller's number)."""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.utils.crypto import salted_hmac

# Django's salted_hmac: HMAC-SHA256 keyed by SHA-256(this salt + SECRET_KEY), a key of
# its own derived from the deployment's secret (never the secret itself).
_KEY_SALT = "voicecalls.privacy.erasure-user-id"
_ROOM_SALT = "voicecalls.privacy.erased-room-name"
ERASED_ROOM_PREFIX = "erased-"


def user_id_hash(*, organization_id: UUID, user_id: str, secret: str | None = None) -> str:
    """Hex HMAC-SHA256 of the organization and the user id. With the organization in it,
    one person's hashes in two organizations differ, so audit records never link them."""
    value = f"{organization_id}:{user_id}"
    return salted_hmac(_KEY_SALT, value, secret=secret, algorithm="sha256").hexdigest()


def user_id_hashes(*, organization_id: UUID, user_id: str) -> list[str]:
    """The hash under SECRET_KEY and under each SECRET_KEY_FALLBACKS: what records made
    before a key rotation hold, so staff can still find a user's erasures."""
    return [
        user_id_hash(organization_id=organization_id, user_id=user_id, secret=secret)
        for secret in _secrets()
    ]


def room_name_erased(room_name: str, *, secret: str | None = None) -> str:
    """What an erased inbound call's room is renamed to: a keyed hash of the name, so
    LiveKit's late webhooks and the agent's retries for that room still find the ended
    call (and open no second one) while the name no longer holds the caller's number.
    The name's random part (LiveKit's) makes the hash unguessable from a number."""
    digest = salted_hmac(_ROOM_SALT, room_name, secret=secret, algorithm="sha256").hexdigest()
    return f"{ERASED_ROOM_PREFIX}{digest}"


def room_names_erased(room_name: str) -> list[str]:
    """The erased name under SECRET_KEY and under each SECRET_KEY_FALLBACKS."""
    return [room_name_erased(room_name, secret=secret) for secret in _secrets()]


def _secrets() -> list[str]:
    return [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
