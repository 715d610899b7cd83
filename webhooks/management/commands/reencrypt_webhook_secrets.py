from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from providerkeys.crypto import UndecryptableValue
from webhooks.services import webhook_secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every signing secret (webhook endpoints' and tool signing secrets) "
        "under CRYPTOGRAPHY_KEY, in one transaction."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            endpoints, tools = webhook_secrets_reencrypt()
        except UndecryptableValue as exc:
            raise CommandError(
                f"{exc} Nothing was changed. Add the key they were written with to "
                "CRYPTOGRAPHY_KEY_FALLBACKS and run this again."
            ) from exc
        self.stdout.write(
            f"Re-encrypted the signing secrets of {endpoints} webhook endpoints and "
            f"{tools} tool signing secrets."
        )
