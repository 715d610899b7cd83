"""What the background task queue already holds, for the sweeps that wake lost work up
(`webhook_deliveries_wake_overdue`, `analyses_wake_overdue`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from django_tasks.base import Task


def task_waiting_args(task: Task, candidates: Collection[tuple[Any, ...]]) -> set[tuple]:
    """The candidates' argument tuples that `task` already has waiting in the queue, due
    and not yet taken by a worker. Waking those again adds only a task row that finds nothing to
    do: while the worker is down, every sweep would add one more per candidate.

    Only the database backend can be asked; with any other, none are known to wait."""
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    if not candidates or not isinstance(task.get_backend(), DatabaseBackend):
        return set()
    firsts = list({args[0] for args in candidates})
    # Due now: one queued for later (a retry's, in an hour) wakes nothing before then.
    waiting = (
        DBTaskResult.objects.ready()
        .filter(task_path=task.module_path, args_kwargs__args__0__in=firsts)
        .values_list("args_kwargs", flat=True)
    )
    queued = {tuple(args_kwargs["args"]) for args_kwargs in waiting}
    return {args for args in candidates if args in queued}
