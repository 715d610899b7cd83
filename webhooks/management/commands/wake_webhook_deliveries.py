from __future__ import annotations

from voicecalls.periodic import PeriodicCommand
from webhooks.recovery import webhook_deliveries_wake_overdue


class Command(PeriodicCommand):
    help = "Re-enqueue pending webhook deliveries whose wake-up was lost (safe to repeat)."

    def run_once(self) -> None:
        count = webhook_deliveries_wake_overdue()
        if count or not self.looping:
            self.stdout.write(f"Woke {count} overdue webhook deliveries.")
