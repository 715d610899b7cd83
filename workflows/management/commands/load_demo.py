from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services import organization_get_or_create
from workflows.services import workflow_demo_load


class Command(BaseCommand):
    help = "Create the demo workflow daily-call in an organization (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug; created when missing.")

    def handle(self, *args: Any, org: str, **options: Any) -> None:
        try:
            organization = organization_get_or_create(slug=org)
        except ValidationError as exc:
            raise CommandError(f"Invalid organization slug {org!r}.") from exc
        workflow, created = workflow_demo_load(organization=organization)
        verb = "Created" if created else "Already present:"
        self.stdout.write(f"{verb} workflow {workflow.slug} ({workflow.id}) in {organization.slug}")
