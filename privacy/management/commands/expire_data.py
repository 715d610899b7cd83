from __future__ import annotations

from privacy.erasure import erasures_wake_due
from privacy.retention import retention_apply
from voicecalls.periodic import PeriodicCommand


class Command(PeriodicCommand):
    help = (
        "Delete transcripts, recordings and callers' data past their retention, and webhook "
        "deliveries past theirs; wake due erasures."
    )

    def run_once(self) -> None:
        result = retention_apply()
        woken = erasures_wake_due()
        pruned = result.webhook_deliveries_pruned
        if result.batches or result.recordings_deleted or pruned or woken:
            self.stdout.write(
                f"transcripts_expired={result.transcripts_expired} "
                f"transcript_lines_deleted={result.transcript_lines_deleted} "
                f"user_data_expired={result.user_data_expired} "
                f"webhook_events_scrubbed={result.webhook_events_scrubbed} "
                f"recordings_deleted={result.recordings_deleted} "
                f"recording_storages_failed={result.recording_storages_failed} "
                f"batches={result.batches} "
                f"webhook_deliveries_pruned={pruned} "
                f"webhook_events_pruned={result.webhook_events_pruned} "
                f"erasures_woken={woken}"
            )
