from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.organizations import ORG_OPTION_HELP, organization_from_option
from accounts.models import KeyKind
from accounts.services import api_key_create


class Command(BaseCommand):
    help = "Create a client API key (--org) or an agent-worker key (--agent); prints it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A label for the key, shown in the admin.")
        parser.add_argument("--org", help=ORG_OPTION_HELP)
        parser.add_argument(
            "--agent",
            action="store_true",
            help="A voice-agent worker key (platform-wide without --org).",
        )

    def handle(self, *args: Any, name: str, org: str | None, agent: bool, **options: Any) -> None:
        if len(name) > 50:
            raise CommandError("NAME must be at most 50 characters.")
        if not name.strip() or not name.isprintable():
            # A NUL is refused by PostgreSQL mid-insert; control characters mangle the admin.
            raise CommandError("NAME must be printable text.")
        if not agent and org is None:
            raise CommandError("A client key needs --org SLUG.")
        # `--org ""` (a variable left unset) is an invalid slug, never "no organization":
        # with --agent that would be a platform key, reaching every organization's calls.
        organization = organization_from_option(org) if org is not None else None
        kind = KeyKind.AGENT if agent else KeyKind.CLIENT
        api_key, plaintext = api_key_create(name=name, kind=kind, organization=organization)
        scope = f"organization {organization.slug}" if organization else "every organization"
        self.stdout.write(f"Created {kind} key {api_key.prefix} for {scope}. Shown once:")
        self.stdout.write(plaintext)
