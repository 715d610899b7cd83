"""`db_worker` (django-tasks-db's task worker) that outlives a database outage.

Upstream's worker loop lets any database error but a locked SQLite file end the
process: a PostgreSQL restart, or PgBouncer refusing logins meanwhile, stopped every
worker for good, and with them customer webhooks (found by the soak, soak/). This one
starts the worker again after a pause instead; SIGINT/SIGTERM still stop it. It takes
upstream's place because the `voicecalls` app comes before `django_tasks_db` in
INSTALLED_APPS.
"""

from __future__ import annotations

import signal
import sys
import time

from django.db import DatabaseError, connections
from django_tasks_db.management.commands import db_worker

RETRY_SECONDS = 1.0


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


class Command(db_worker.Command):
    help = "Run the database task queue's worker; a database outage pauses it, never ends it."

    def handle(self, *args: object, **options: object) -> None:
        while True:
            try:
                return super().handle(*args, **options)
            except DatabaseError as exc:
                self.stderr.write(f"db_worker: the database failed ({exc!r}); again in 1 s")
            # Until the next worker installs its own: stop at once when told to.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _exit)
            connections.close_all()
            time.sleep(RETRY_SECONDS)
