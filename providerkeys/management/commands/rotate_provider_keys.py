from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from providerkeys.crypto import UndecryptableValue
from providerkeys.services import provider_keys_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt every provider key under CRYPTOGRAPHY_KEY, in one transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only count the keys still encrypted under a fallback key; change nothing.",
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        try:
            result = provider_keys_reencrypt(dry_run=dry_run)
        except UndecryptableValue as exc:
            raise CommandError(
                f"{exc} Nothing was changed. Add the key they were written with to "
                "CRYPTOGRAPHY_KEY_FALLBACKS and run this again."
            ) from exc
        if dry_run:
            self.stdout.write(
                f"{result.total} provider keys; {result.under_fallback} still encrypted under "
                "a fallback key. Nothing was changed (--dry-run)."
            )
        else:
            self.stdout.write(
                f"Re-encrypted {result.total} provider keys under CRYPTOGRAPHY_KEY "
                f"({result.under_fallback} were under a fallback key)."
            )
