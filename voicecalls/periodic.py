"""Management commands that run one pass, or keep running one pass every `--every`
seconds (`expire_calls`, `expire_data`, `wake_analyses`, `wake_webhook_deliveries`): the
loop, its signals and its resilience once."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections


class PeriodicCommand(BaseCommand):
    """Subclasses implement `run_once` (one pass; it writes what it did, when looping
    only what changed: `looping`)."""

    looping = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="Keep running, one pass every SECONDS (until SIGINT/SIGTERM).",
        )

    def handle(self, *args: object, every: float | None = None, **options: object) -> None:
        verbose = int(options.get("verbosity", 1)) > 1
        if every is None:
            self.run_once()
            return
        if every <= 0:
            raise CommandError("--every must be a positive number of seconds.")
        self.looping = True
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            close_old_connections()
            try:
                self.run_once()
            except Exception as exc:  # a database hiccup must not end the loop
                self.stderr.write(f"{self.name}: pass failed: {exc!r}")
            if verbose:  # `-v 2`: a line per pass, to see the loop is alive
                self.stdout.write(f"{self.name}: pass done")
            stop.wait(every)

    @property
    def name(self) -> str:
        return self.__module__.rsplit(".", 1)[-1]

    def run_once(self) -> None:
        raise NotImplementedError
