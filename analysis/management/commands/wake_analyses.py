from __future__ import annotations

from analysis.recovery import analyses_wake_overdue
from voicecalls.periodic import PeriodicCommand


class Command(PeriodicCommand):
    help = (
        "Re-enqueue post-call analyses whose wake-up was lost or whose worker died "
        "(safe to repeat)."
    )

    def run_once(self) -> None:
        count = analyses_wake_overdue()
        if count or not self.looping:
            self.stdout.write(f"Woke {count} overdue analyses.")
