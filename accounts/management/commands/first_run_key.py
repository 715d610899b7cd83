from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management.organizations import ORG_OPTION_HELP, organization_from_option
from accounts.models import APIKey, KeyKind
from accounts.services import api_key_create

RULE = "=" * 76


def key_box(org: str, plaintext: str) -> str:
    """The key between two rules, on a line of its own (no border to copy along with
    it), so it stands out in the terminal above the server's log lines."""
    return "\n".join(
        [
            "",
            RULE,
            f"  Your client API key for organization {org}. It is shown only this once:",
            "  copy it now, before the server's log below pushes it out of sight.",
            "",
            f"    {plaintext}",
            "",
            '  Use it as "Authorization: Bearer <key>" (README: "A call, with curl").',
            f"  Lost it? .venv/bin/python manage.py create_api_key NAME --org {org}",
            RULE,
            "",
        ]
    )


class Command(BaseCommand):
    help = "On first run only, create and print a client API key for the organization."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help=ORG_OPTION_HELP)

    def handle(self, *args: Any, org: str, **options: Any) -> None:
        organization = organization_from_option(org)
        if APIKey.objects.filter(organization=organization, kind=KeyKind.CLIENT).exists():
            self.stdout.write(
                f"Organization {org} already has a client key (keys are shown only once; "
                f"make another with: .venv/bin/python manage.py create_api_key NAME --org {org})."
            )
            return
        _, plaintext = api_key_create(name="first-run", organization=organization)
        self.stdout.write(key_box(org, plaintext))
