from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.management.organizations import ORG_OPTION_HELP, organization_from_option
from workflows.services import workflow_demo_load


class Command(BaseCommand):
    help = "Create the demo workflow daily-call in an organization (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help=ORG_OPTION_HELP)

    def handle(self, *args: Any, org: str, **options: Any) -> None:
        organization = organization_from_option(org)
        workflow, created = workflow_demo_load(organization=organization)
        verb = "Created" if created else "Already present:"
        self.stdout.write(f"{verb} workflow {workflow.slug} ({workflow.id}) in {organization.slug}")
