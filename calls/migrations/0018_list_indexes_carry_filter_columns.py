"""The list indexes carry the other filters' columns (`Call.Meta.indexes`).

On PostgreSQL each new index is built CONCURRENTLY under a temporary name and then
takes the old one's place, so calls are written and listed while a big table's
indexes build (seconds per million calls, during which a plain rebuild would hold
every insert). Elsewhere the indexes are replaced as usual.
"""

from django.db import migrations, models

# name: (fields before, fields after)
CHANGED = {
    "call_org_status": (
        ["organization", "status", "-created_at", "-id"],
        ["organization", "status", "-created_at", "-id", "started_at"],
    ),
    "call_org_user": (
        ["organization", "user_id", "-created_at", "-id"],
        ["organization", "user_id", "-created_at", "-id", "status", "started_at"],
    ),
    "call_org_workflow": (
        ["organization", "workflow", "-created_at", "-id"],
        ["organization", "workflow", "-created_at", "-id", "status", "started_at"],
    ),
}


def _replace(schema_editor, model, *, name: str, old: list, new: list) -> None:
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_index(model, models.Index(fields=old, name=name))
        schema_editor.add_index(model, models.Index(fields=new, name=name))
        return
    building = models.Index(fields=new, name=f"{name}_building")
    # A build that failed half-way leaves an invalid index behind: start afresh.
    schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{building.name}"')
    schema_editor.add_index(model, building, concurrently=True)
    schema_editor.remove_index(model, models.Index(fields=old, name=name), concurrently=True)
    schema_editor.execute(f'ALTER INDEX "{building.name}" RENAME TO "{name}"')


def widen(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    for name, (old, new) in CHANGED.items():
        _replace(schema_editor, model, name=name, old=old, new=new)


def narrow(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    for name, (old, new) in CHANGED.items():
        _replace(schema_editor, model, name=name, old=new, new=old)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0017_list_indexes_carry_window_columns"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(widen, narrow)],
            state_operations=[
                *(migrations.RemoveIndex(model_name="call", name=name) for name in CHANGED),
                *(
                    migrations.AddIndex(
                        model_name="call", index=models.Index(fields=new, name=name)
                    )
                    for name, (_, new) in CHANGED.items()
                ),
            ],
        ),
    ]
