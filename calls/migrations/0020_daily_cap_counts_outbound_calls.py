"""The daily cap counts outbound phone calls only (telephony.guard), so its index holds
only those: calls an organization receives no longer sit in it.

On PostgreSQL the new index is built CONCURRENTLY before the old one is dropped
CONCURRENTLY, so calls are created meanwhile; elsewhere as usual.
"""

from django.db import migrations, models

OLD = models.Index(
    condition=models.Q(channel="phone"),
    fields=["organization", "-created_at"],
    name="call_org_phone_created",
)
NEW = models.Index(
    condition=models.Q(channel="phone", direction="outbound"),
    fields=["organization", "-created_at"],
    name="call_org_outbound_created",
)


def _swap(schema_editor, model, *, add: models.Index, drop: models.Index) -> None:
    concurrently = schema_editor.connection.vendor == "postgresql"
    if concurrently:
        # A build that failed half-way leaves an invalid index behind: start afresh.
        schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{add.name}"')
        schema_editor.add_index(model, add, concurrently=True)
        schema_editor.remove_index(model, drop, concurrently=True)
    else:
        schema_editor.add_index(model, add)
        schema_editor.remove_index(model, drop)


def forwards(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("calls", "Call"), add=NEW, drop=OLD)


def backwards(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("calls", "Call"), add=OLD, drop=NEW)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0019_call_analysis_copy"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.RemoveIndex(model_name="call", name=OLD.name),
                migrations.AddIndex(model_name="call", index=NEW),
            ],
        ),
    ]
