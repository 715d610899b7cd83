"""`db_worker` (django-tasks-db's task worker) that outlives a database outage, and
runs several workers at once with `--threads`.

Upstream's worker loop lets any database error but a locked SQLite file end the
process: a PostgreSQL restart, or PgBouncer refusing logins meanwhile, stopped every
worker for good, and with them customer webhooks (found by the soak, soak/). This one
starts the worker again after a pause instead; SIGINT/SIGTERM still stop it. It takes
upstream's place because the `voicecalls` app comes before `django_tasks_db` in
INSTALLED_APPS.

A dial job holds its worker while the phone rings: one worker rings one phone at a
time, every organization's. `--threads N` runs N workers in this process, so N phones
ring at once; a signal lets each finish its job, a second stops them at once.

During a rolling deploy, and after a rollback, a worker takes rows another release
queued: a task this release does not have, or arguments its function does not take.
Upstream fails them for good (ImportError, TypeError), so what they were to do never
happens; here they wait for a worker that can run them, then fail after a day (README
"Upgrading").
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import signal
import sys
import threading
import time
from argparse import ArgumentTypeError
from collections.abc import Callable

from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections
from django.utils import timezone
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django.utils.module_loading import import_string
from django_tasks.base import Task, TaskResultStatus
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult

logger = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
MAX_THREADS = 100
# A task another release queued is looked at again after its age (at least a minute, at
# most an hour: a rollout's minutes, a rollback's hours), until it is a day old.
FOREIGN_TASK_FIRST_WAIT = datetime.timedelta(minutes=1)
FOREIGN_TASK_LONGEST_WAIT = datetime.timedelta(hours=1)
FOREIGN_TASK_MAX_AGE = datetime.timedelta(days=1)


def task_foreign_reason(row: DBTaskResult) -> str | None:
    """Why this release cannot run the queued task (another queued it), or None."""
    try:
        task = import_string(row.task_path)
    except ImportError:
        return "no such task here"
    except Exception:
        return None  # a module that fails to load: upstream fails the task, as it is
    if not isinstance(task, Task):
        return None  # not another release's: upstream fails it as it is
    args = ([None] if task.takes_context else []) + list(row.args_kwargs.get("args") or [])
    try:
        inspect.signature(task.func).bind(*args, **(row.args_kwargs.get("kwargs") or {}))
    except TypeError as exc:
        return f"its arguments do not fit ({exc})"
    return None


def task_put_back(row: DBTaskResult, *, reason: str) -> bool:
    """Leave a task another release queued for a worker that can run it; False once it
    has waited a day (it is then run, and fails where it is seen)."""
    now = timezone.now()
    age = now - row.enqueued_at
    if age > FOREIGN_TASK_MAX_AGE:
        return False
    row.status = TaskResultStatus.READY
    row.run_after = now + min(max(age, FOREIGN_TASK_FIRST_WAIT), FOREIGN_TASK_LONGEST_WAIT)
    row.started_at = None
    row.worker_ids = row.worker_ids[:-1]  # not this worker's to keep: it ran nothing
    row.save(update_fields=["status", "run_after", "started_at", "worker_ids"])
    logger.warning(
        "task %s %s queued by another release: %s; left for a worker that can run it, "
        "looked at again at %s",
        row.id,
        row.task_path,
        reason,
        row.run_after.isoformat(),
    )
    return True


class Worker(db_worker.Worker):
    def run_task(self, db_task_result: DBTaskResult) -> None:
        reason = task_foreign_reason(db_task_result)
        if reason is not None and task_put_back(db_task_result, reason=reason):
            return
        super().run_task(db_task_result)


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


def _threads(value: str) -> int:
    count = int(value)
    if not 1 <= count <= MAX_THREADS:
        raise ArgumentTypeError(f"Must be from 1 to {MAX_THREADS}.")
    return count


def _outliving_outages(run: Callable[[], None], *, running: Callable[[], bool]) -> None:
    """Run a worker again after a database failure, while it is to run."""
    while True:
        try:
            return run()
        except DatabaseError as exc:
            sys.stderr.write(f"db_worker: the database failed ({exc!r}); again in 1 s\n")
        connections.close_all()
        time.sleep(RETRY_SECONDS)
        if not running():
            return None


class Command(db_worker.Command):
    help = "Run the database task queue's worker; a database outage pauses it, never ends it."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--threads",
            type=_threads,
            default=1,
            help="Workers run at once in this process (the dial queue: phones ringing at once).",
        )

    def handle(self, *args: object, threads: int = 1, **options: object) -> None:
        if threads > 1:
            if connection.vendor == "sqlite":
                # Its claims lock the whole file: jobs in threads fail on it.
                raise CommandError("--threads needs PostgreSQL; on SQLite run one worker.")
            return self._handle_threads(threads, **options)
        while True:
            try:
                return self._handle_one(**options)
            except DatabaseError as exc:
                self.stderr.write(f"db_worker: the database failed ({exc!r}); again in 1 s")
            # Until the next worker installs its own: stop at once when told to.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _exit)
            connections.close_all()
            time.sleep(RETRY_SECONDS)

    def _handle_one(self, **options: object) -> None:
        """Upstream's `handle`, with this module's worker."""
        worker = self._worker(None, **options)
        if options["reload"] and not options["batch"]:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                worker.configure_signals()  # only the reloaded child
            run_with_reloader(worker.run)
            return
        worker.configure_signals()
        worker.run()

    def _handle_threads(self, count: int, **options: object) -> None:
        workers = [self._worker(index, **options) for index in range(count)]

        def stop(signum: int, frame: object) -> None:
            if not all(worker.running for worker in workers):
                os._exit(1)  # told twice: the jobs running are left as they are
            for worker in workers:
                worker.running = False

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)

        def run(worker: db_worker.Worker) -> None:
            try:
                _outliving_outages(worker.run, running=lambda: worker.running)
            finally:
                connections.close_all()  # this thread's

        started = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
        for thread in started:
            thread.start()
        for thread in started:
            while thread.is_alive():
                thread.join(0.5)  # woken now and then for the signals

    def _worker(self, index: int | None, **options: object) -> Worker:
        """Upstream's worker as its own `handle` makes it (no reloading in threads)."""
        self.configure_logging(options["verbosity"])
        queue_names = str(options["queue_name"]).split(",")
        excluded = str(options["exclude_queues"] or "")
        excluded_names = excluded.split(",") if excluded else []
        if excluded_names and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker_id = str(options["worker_id"])
        if index is not None:
            worker_id = f"{worker_id[:60]}-{index}"
        return Worker(
            queue_names=queue_names,
            interval=options["interval"],
            batch=options["batch"],
            backend_name=options["backend_name"],
            startup_delay=options["startup_delay"],
            max_tasks=options["max_tasks"],
            worker_id=worker_id,
            excluded_queue_names=excluded_names,
        )
