from __future__ import annotations

from django.core.management.base import BaseCommand

from analysis.services import analyses_wake_overdue


class Command(BaseCommand):
    help = (
        "Re-enqueue post-call analyses whose wake-up was lost or whose worker died "
        "(safe to repeat)."
    )

    def handle(self, *args: object, **options: object) -> None:
        count = analyses_wake_overdue()
        self.stdout.write(f"Woke {count} overdue analyses.")
