"""README "Upgrading": `migrate` runs first, while the previous release still serves.
Its processes insert rows naming only the columns they know, so a NOT NULL column a
migration adds to an existing table must take its value from the database itself. And
while old and new processes run side by side, each release's workers take tasks the
other queued."""

from __future__ import annotations

import datetime
import importlib
import logging

import pytest
from django.apps import apps
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from django_tasks.base import Task, TaskResultStatus
from django_tasks_db.models import DBTaskResult

from calls.tasks import call_room_close
from tests.factories import CallFactory
from tests.tasks import run_task_worker
from voicecalls.management.commands.db_worker import task_foreign_reason

pytestmark = pytest.mark.django_db

PROJECT_APPS = {
    config.label for config in apps.get_app_configs() if "site-packages" not in config.path
}
# Columns no default could serve: the release before them could not write these rows on
# the new schema whatever the default (accounts 0008 replaced the column it wrote; a
# call's room name is its own, calls 0012).
NO_DEFAULT_POSSIBLE = {"accounts_ratelimitstate.tat_us", "calls_call.room_name"}


def _columns_added_to_existing_tables() -> list[tuple[str, str, str]]:
    """(app label, model name, field name) of every AddField in the project's
    migrations (a field added with its table is CreateModel's)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    added = []
    for (label, _), migration in sorted(loader.disk_migrations.items()):
        if label not in PROJECT_APPS:
            continue
        for operation in migration.operations:
            if isinstance(operation, migrations.AddField):
                added.append((label, operation.model_name, operation.name))
    return added


def test_every_not_null_column_added_to_an_existing_table_has_a_database_default() -> None:
    without_default = []
    with connection.cursor() as cursor:
        for label, model_name, field_name in _columns_added_to_existing_tables():
            model = apps.get_model(label, model_name)
            field = model._meta.get_field(field_name)
            if field.null or field.many_to_many:
                continue
            table = model._meta.db_table
            columns = connection.introspection.get_table_description(cursor, table)
            (column,) = [c for c in columns if c.name == field.column]
            if column.null_ok:
                continue
            name = f"{table}.{field.column}"
            if column.default is None and name not in NO_DEFAULT_POSSIBLE:
                without_default.append(name)
    assert without_default == []


# Operations that take away what the release before reads or writes: a table or column
# goes or is renamed under it. Drop in the release after the one that stopped using it.
TAKING_AWAY = (
    migrations.RemoveField,
    migrations.RenameField,
    migrations.DeleteModel,
    migrations.RenameModel,
    migrations.AlterModelTable,
)
# accounts 0008 replaced the column the release before wrote (README "Upgrading").
TAKEN_AWAY_BEFORE = {("accounts", "0008_rate_limit_state_microseconds", "RemoveField")}


def _database_operations(operations: list) -> list:
    flat = []
    for operation in operations:
        if isinstance(operation, migrations.SeparateDatabaseAndState):
            flat += _database_operations(operation.database_operations)
        else:
            flat.append(operation)
    return flat


def test_no_migration_takes_away_a_table_or_column_the_release_before_uses() -> None:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    taking = {
        (label, name, type(operation).__name__)
        for (label, name), migration in loader.disk_migrations.items()
        if label in PROJECT_APPS
        for operation in _database_operations(migration.operations)
        if isinstance(operation, TAKING_AWAY)
    }
    assert taking == TAKEN_AWAY_BEFORE


# --- Tasks another release queued ------------------------------------------------------
# During a rolling deploy (and after a rollback) a worker takes rows a release other than
# its own queued: a task it does not have, or arguments its function does not take.


def queued_by_another_release(call_id: str, *, task_path: str = "", **kwargs: object):
    """A room close queued as another release would queue it: under `task_path`, or with
    keywords this release's function does not take."""
    result = DBTaskResult.objects.get(pk=call_room_close.enqueue(call_id).id)
    result.task_path = task_path or result.task_path
    result.args_kwargs = {"args": [call_id], "kwargs": kwargs}
    result.save(update_fields=["task_path", "args_kwargs"])
    return result


def run_one_task() -> None:
    run_task_worker("*", "--exclude-queues", "dial", "--max-tasks", "1")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "queued",
    [
        {"from_a_later_release": True},
        {"task_path": "calls.tasks.call_room_close_from_a_later_release"},
    ],
    ids=["a-keyword-it-lacks", "a-task-it-lacks"],
)
def test_a_task_this_release_cannot_run_waits_for_a_worker_that_can(
    organization, fake_livekit, caplog, queued
) -> None:
    """A worker of the release before failed such a task for good (a TypeError, an
    ImportError), and what it was to do never happened: the new release's worker, a
    minute later, would have run it."""
    call = CallFactory(organization=organization)
    row = queued_by_another_release(str(call.pk), **queued)
    before = timezone.now()

    with caplog.at_level(logging.WARNING, logger="voicecalls.management.commands.db_worker"):
        run_one_task()

    row.refresh_from_db()
    assert row.status == TaskResultStatus.READY
    assert before + datetime.timedelta(seconds=59) < row.run_after
    assert row.run_after < before + datetime.timedelta(minutes=2)
    assert fake_livekit.requests == []
    assert row.task_path in caplog.text and "another release" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_task_no_release_ran_for_a_day_fails_where_it_is_seen(organization, fake_livekit) -> None:
    """Waiting is bounded: one no worker could run for a day fails (the admin's task
    results, the log) rather than being tried for ever."""
    call = CallFactory(organization=organization)
    row = queued_by_another_release(str(call.pk), from_a_later_release=True)
    DBTaskResult.objects.filter(pk=row.pk).update(
        enqueued_at=timezone.now() - datetime.timedelta(days=1, minutes=1)
    )

    run_one_task()

    row.refresh_from_db()
    assert row.status == TaskResultStatus.FAILED
    assert row.exception_class_path == "builtins.TypeError"
    assert "from_a_later_release" in row.traceback


CALL = "4e4f2a56-9d0b-4a8e-8f3c-2d0c5b7a1e11"
# Every task path and shape of arguments a release has queued (git log -p -- '*/tasks.py'),
# which rows of the release before may hold when this one starts: never rename or remove a
# task, give a new parameter a default, and add its shape here.
QUEUED_BY_EARLIER_RELEASES = [
    ("calls.tasks.call_room_close", [CALL], {}),
    ("calls.tasks.call_room_close", [CALL], {"unless_attended": True}),
    ("calls.tasks.call_room_close", [CALL], {"attempt": 1}),
    ("calls.tasks.call_room_close", [CALL], {"attempt": 2, "unless_attended": True}),
    ("recordings.tasks.recording_start", [CALL], {}),
    ("recordings.tasks.recording_file_delete", [CALL], {}),
    ("recordings.tasks.recording_file_delete", [CALL, 1], {}),
    ("webhooks.tasks.deliver_webhook", [1], {}),
    ("analysis.tasks.analyse_call", [CALL, 1], {}),
    ("privacy.tasks.erasure_run_task", [CALL], {}),
    ("telephony.tasks.phone_call_dial", [CALL], {}),
]


def _project_tasks() -> set[str]:
    paths = set()
    for label in PROJECT_APPS:
        try:
            module = importlib.import_module(f"{apps.get_app_config(label).name}.tasks")
        except ModuleNotFoundError:
            continue
        paths |= {v.module_path for v in vars(module).values() if isinstance(v, Task)}
    return paths


@pytest.mark.parametrize(("path", "args", "kwargs"), QUEUED_BY_EARLIER_RELEASES)
def test_a_task_an_earlier_release_queued_runs_on_this_one(path, args, kwargs) -> None:
    row = DBTaskResult(task_path=path, args_kwargs={"args": args, "kwargs": kwargs})
    assert task_foreign_reason(row) is None


def test_every_task_of_this_release_is_among_those_kept_running() -> None:
    assert _project_tasks() == {path for path, _, _ in QUEUED_BY_EARLIER_RELEASES}
