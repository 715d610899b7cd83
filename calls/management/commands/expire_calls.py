from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from calls.expiry import calls_expire


class Command(BaseCommand):
    help = "Time out calls nobody joined or that ran too long; reconcile silent calls."

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
                self.stderr.write(f"expire_calls: pass failed: {exc!r}")
            stop.wait(every)

    def _run_once(self) -> None:
        result = calls_expire()
        if (
            result.connect_timeouts
            or result.dial_timeouts
            or result.max_durations
            or result.reconciled
            or result.livekit_errors
            or result.open_counters_repaired
        ):
            self.stdout.write(
                f"connect_timeout={result.connect_timeouts} dial_timeout={result.dial_timeouts} "
                f"max_duration={result.max_durations} "
                f"reconciled={result.reconciled} livekit_errors={result.livekit_errors} "
                f"open_counters_repaired={result.open_counters_repaired}"
            )
