"""The `--org SLUG` option shared by the management commands that act for an organization."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from accounts.models import Organization
from accounts.services import organization_get_or_create

ORG_OPTION_HELP = "Organization slug; created when missing."


def organization_from_option(slug: str) -> Organization:
    """The organization with this slug, created when missing; a slug that is not valid
    is the command's error, not a traceback."""
    try:
        return organization_get_or_create(slug=slug)
    except ValidationError as exc:
        raise CommandError(f"Invalid organization slug {slug!r}.") from exc
