from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management.organizations import ORG_OPTION_HELP, organization_from_option
from accounts.models import APIKey, KeyKind
from accounts.services import api_key_create


class Command(BaseCommand):
    help = "On first run only, create and print a client API key for the organization."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help=ORG_OPTION_HELP)

    def handle(self, *args: Any, org: str, **options: Any) -> None:
        organization = organization_from_option(org)
        if APIKey.objects.filter(organization=organization, kind=KeyKind.CLIENT).exists():
            self.stdout.write(
                f"Organization {org} already has a client key (keys are shown only once; "
                f"make another with: python manage.py create_api_key NAME --org {org})."
            )
            return
        _, plaintext = api_key_create(name="first-run", organization=organization)
        self.stdout.write(f"Your client API key for organization {org} (shown once):")
        self.stdout.write(plaintext)
