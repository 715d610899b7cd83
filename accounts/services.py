from __future__ import annotations

from django.core.validators import validate_slug
from django.db import transaction

from accounts.models import APIKey, KeyKind, Organization


def organization_get_or_create(*, slug: str, name: str | None = None) -> Organization:
    """The organization with this slug, created when missing (ValidationError on a bad slug)."""
    validate_slug(slug)
    organization, _ = Organization.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return organization


@transaction.atomic
def api_key_create(
    *, name: str, kind: str = KeyKind.CLIENT, organization: Organization | None = None
) -> tuple[APIKey, str]:
    """Create an API key; the plaintext is returned here once and never stored."""
    if kind == KeyKind.CLIENT and organization is None:
        raise ValueError("A client key needs an organization.")
    return APIKey.objects.create_key(name=name, kind=kind, organization=organization)
