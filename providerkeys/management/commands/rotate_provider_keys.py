from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from providerkeys.crypto import UndecryptableValue
from providerkeys.models import ProviderKey
from providerkeys.reencrypt import ColumnReencrypted, secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every provider key, and every other stored secret (webhook signing "
        "secrets, SIP trunk passwords, recording storage credentials, erasure records), "
        "under CRYPTOGRAPHY_KEY, in one transaction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only count the secrets still encrypted under a fallback key; change nothing.",
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        try:
            columns = secrets_reencrypt(dry_run=dry_run)
        except UndecryptableValue as exc:
            raise CommandError(
                f"{exc} Nothing was changed. Add the key they were written with to "
                "CRYPTOGRAPHY_KEY_FALLBACKS and run this again."
            ) from exc
        keys = next(column for column in columns if column.model is ProviderKey)
        others = [column for column in columns if column.model is not ProviderKey]
        if dry_run:
            self.stdout.write(
                f"{keys.total} provider keys; {keys.under_fallback} still encrypted under "
                "a fallback key. Nothing was changed (--dry-run)."
            )
        else:
            self.stdout.write(
                f"Re-encrypted {keys.total} provider keys under CRYPTOGRAPHY_KEY "
                f"({keys.under_fallback} were under a fallback key)."
            )
        self.stdout.write(_others_line(others, dry_run=dry_run))


def _others_line(columns: list[ColumnReencrypted], *, dry_run: bool) -> str:
    total = sum(column.total for column in columns)
    under = sum(column.under_fallback for column in columns)
    kinds = ", ".join(
        f"{column.model._meta.verbose_name} {column.field}: {column.total}"
        for column in columns
        if column.total
    )
    verb = "Other secrets" if dry_run else "Re-encrypted other secrets"
    under_text = "still under a fallback key" if dry_run else "were under a fallback key"
    return f"{verb}: {total} ({under} {under_text}){'; ' + kinds if kinds else ''}."
