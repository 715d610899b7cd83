from __future__ import annotations

from privacy.erasure import erasures_wake_due
from privacy.retention import retention_apply
from voicecalls.periodic import PeriodicCommand


class Command(PeriodicCommand):
    help = (
        "Delete transcripts, recordings and callers' data past their retention; wake due erasures."
    )

    def run_once(self) -> None:
        result = retention_apply()
        woken = erasures_wake_due()
        if result.batches or result.recordings_deleted or woken:
            self.stdout.write(
                f"transcripts_expired={result.transcripts_expired} "
                f"transcript_lines_deleted={result.transcript_lines_deleted} "
                f"user_data_expired={result.user_data_expired} "
                f"webhook_events_scrubbed={result.webhook_events_scrubbed} "
                f"recordings_deleted={result.recordings_deleted} "
                f"recording_storages_failed={result.recording_storages_failed} "
                f"batches={result.batches} erasures_woken={woken}"
            )
