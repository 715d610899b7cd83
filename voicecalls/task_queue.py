"""What the background task queue already holds, for the sweeps that wake lost work up
(`webhook_deliveries_wake_overdue`, `analyses_wake_overdue`)."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any

from django.db.models import QuerySet
from django_tasks.base import Task

# How far apart two hosts' clocks may be. A row is made due by one host's clock (the web
# request's) and its wake-up, queued for at once, is taken by a worker reading another's:
# a wake-up that comes this little early is put back for its time, not dropped (the
# sweeps would find it only minutes later).
CLOCK_SKEW = datetime.timedelta(seconds=5)
# The jobs of live calls (closing an ended call's room, starting a recording): the shared
# worker takes them before any organization's backlog of webhook deliveries and analyses
# (priority 0), which would otherwise hold a room open, its agent talking and billed.
LIVE_CALL_PRIORITY = 10
# Retries (an endpoint or a provider failed) and waits for an organization's turn: after
# every other job, as the queue takes jobs queued for a time before those queued for at
# once, and a failing customer's retries went before everyone's new work.
LATER_PRIORITY = -10


def task_waiting_args(
    task: Task,
    candidates: Collection[tuple[Any, ...]],
    *,
    due_only: bool = True,
    taken_since: datetime.datetime | None = None,
) -> set[tuple]:
    """The candidates' argument tuples that `task` already has waiting in the queue, due
    and not yet taken by a worker. Waking those again adds only a task row that finds nothing to
    do: while the worker is down, every sweep would add one more per candidate.

    With `due_only` False, also those queued for later (a retry's, in an hour), compared
    by their first argument only (a retry's others differ: its attempt number). With
    `taken_since`, also those a worker took (RUNNING) since then: it is running them
    still (one taken long ago may have died with its worker).

    Only the database backend can be asked; with any other, none are known to wait."""
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    if not candidates or not isinstance(task.get_backend(), DatabaseBackend):
        return set()
    firsts = list({args[0] for args in candidates})
    # Due now: one queued for later (a retry's, in an hour) wakes nothing before then.
    results = DBTaskResult.objects
    pending = results.ready() if due_only else results.filter(status=TaskResultStatus.READY)
    if taken_since is not None:
        pending = pending | results.filter(
            status=TaskResultStatus.RUNNING, started_at__gte=taken_since
        )
    waiting = pending.filter(
        task_path=task.module_path, args_kwargs__args__0__in=firsts
    ).values_list("args_kwargs", flat=True)
    queued = {tuple(args_kwargs["args"]) for args_kwargs in waiting}
    if not due_only:
        queued_firsts = {args[0] for args in queued if args}
        return {args for args in candidates if args[:1] and args[0] in queued_firsts}
    return {args for args in candidates if args in queued}


def due_within_clock_skew(rows: QuerySet, *, now: datetime.datetime) -> datetime.datetime | None:
    """When the first of `rows` (with a `next_attempt_at`) is due, if that is later than
    `now` by CLOCK_SKEW at most: a wake-up this early is to be put back for that time."""
    return (
        rows.filter(next_attempt_at__gt=now, next_attempt_at__lte=now + CLOCK_SKEW)
        .values_list("next_attempt_at", flat=True)
        .first()
    )
