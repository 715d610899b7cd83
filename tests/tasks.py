"""The real task worker in tests: `db_worker --batch` on one queue runs every job due
now, then exits (restoring the signal handlers it installs)."""

from __future__ import annotations

import signal

from django.core.management import call_command

# Tasks run as they are enqueued (with django_capture_on_commit_callbacks(execute=True)).
IMMEDIATE_TASKS = {
    "default": {
        "BACKEND": "django_tasks.backends.immediate.ImmediateBackend",
        "QUEUES": ["default", "webhooks"],
    }
}


def run_task_worker(queue: str, *extra: str) -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        call_command(
            "db_worker",
            "--batch",
            "--queue-name",
            queue,
            "--no-startup-delay",
            "--no-reload",
            "--interval",
            "0",
            *extra,
            verbosity=0,
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
