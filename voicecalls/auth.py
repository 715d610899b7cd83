"""Bearer API-key authentication and the client/agent permission split.

Keys are `djangorestframework-api-key` keys (hashed with SHA-512, prefixed); this
module only reads them from `Authorization: Bearer <key>` and tells client keys
from agent-worker keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from accounts.models import APIKey, KeyKind, Organization
from accounts.selectors import api_key_get_from_key
from voicecalls.logging import organization_id_var

# What the library's key generator makes: letters and digits, `prefix.secret`. Anything
# else is refused before the lookup (PostgreSQL rejects a NUL in a parameter outright).
KEY_SHAPE = re.compile(r"[A-Za-z0-9]{1,64}\.[A-Za-z0-9]{1,128}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's organization (None for a platform agent key) and kind."""

    api_key_id: str
    kind: str
    organization: Organization | None

    is_authenticated = True
    is_anonymous = False

    @property
    def is_agent(self) -> bool:
        return self.kind == KeyKind.AGENT


class OrganizationSuspended(exceptions.PermissionDenied):
    """403 for every request of a suspended organization's client keys, and for what
    would start a call of it (accounts.models.Organization.suspended_at)."""

    default_detail = "Your organization is suspended; contact support."
    default_code = "organization_suspended"


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, APIKey] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid API key.") from exc
        api_key = api_key_get_from_key(raw_key) if KEY_SHAPE.fullmatch(raw_key) else None
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.has_expired:
            raise exceptions.AuthenticationFailed("API key has expired.")
        organization_id_var.set(str(api_key.organization_id) if api_key.organization_id else None)
        # Read with the key, no query of its own. Agent keys go on: the calls already
        # open keep their sessions and transcripts (README "Suspending an organization").
        if api_key.kind == KeyKind.CLIENT and api_key.organization.is_suspended:
            raise OrganizationSuspended()
        principal = Principal(
            api_key_id=api_key.pk, kind=api_key.kind, organization=api_key.organization
        )
        return principal, api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class IsClientKey(permissions.BasePermission):
    """A customer's client key: reaches its organization's objects, never agent paths."""

    message = "This endpoint needs a client API key."

    def has_permission(self, request: Request, view: object) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            # Unauthenticated: DRF turns this into 401 with WWW-Authenticate.
            return False
        return principal.kind == KeyKind.CLIENT


class IsAgentKey(permissions.BasePermission):
    """A voice-agent worker key: reaches only /api/v1/agent/*."""

    message = "This endpoint needs an agent API key."

    def has_permission(self, request: Request, view: object) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        return principal.kind == KeyKind.AGENT
