from __future__ import annotations

from django.core.management.base import BaseCommand

from webhooks.delivery import webhook_deliveries_wake_overdue


class Command(BaseCommand):
    help = "Re-enqueue pending webhook deliveries whose wake-up was lost (safe to repeat)."

    def handle(self, *args: object, **options: object) -> None:
        count = webhook_deliveries_wake_overdue()
        self.stdout.write(f"Woke {count} overdue webhook deliveries.")
