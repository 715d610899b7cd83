from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from privacy.erasure import erasures_wake_due
from privacy.retention import retention_apply


class Command(BaseCommand):
    help = "Delete transcripts and callers' data past their retention; wake due erasures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="Keep running, one pass every SECONDS (until SIGINT/SIGTERM).",
        )

    def handle(self, *args: object, every: float | None = None, **options: object) -> None:
        if every is None:
            self._run_once()
            return
        if every <= 0:
            raise CommandError("--every must be a positive number of seconds.")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            close_old_connections()
            try:
                self._run_once()
            except Exception as exc:  # a database hiccup must not end the loop
                self.stderr.write(f"expire_data: pass failed: {exc!r}")
            stop.wait(every)

    def _run_once(self) -> None:
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
