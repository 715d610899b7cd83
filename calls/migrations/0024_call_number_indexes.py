"""The callee and caller indexes lead with the number (`Call.Meta.indexes`): the
admin's search finds a number's calls across organizations, which an index leading
with the organization cannot serve; an erasure, within one organization, reads the
new ones by both columns. On PostgreSQL the new indexes are built CONCURRENTLY before
the old ones are dropped, so calls are written while they build."""

from django.db import migrations, models

from voicecalls.db import index_add

OUTBOUND = models.Q(("channel", "phone"), ("direction", "outbound"))
INBOUND = models.Q(("channel", "phone"), ("direction", "inbound"))
OLD = [
    models.Index(
        condition=OUTBOUND, fields=["organization", "phone_number"], name="call_org_callee"
    ),
    models.Index(condition=INBOUND, fields=["organization", "from_number"], name="call_org_caller"),
]
NEW = [
    models.Index(condition=OUTBOUND, fields=["phone_number", "organization"], name="call_callee"),
    models.Index(condition=INBOUND, fields=["from_number", "organization"], name="call_caller"),
]


def _swap(schema_editor, model, *, old: list, new: list) -> None:
    for index in new:
        index_add(schema_editor, model, index)
    for index in old:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, index, concurrently=True)
        else:
            schema_editor.remove_index(model, index)


def forwards(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("calls", "Call"), old=OLD, new=NEW)


def backwards(apps, schema_editor) -> None:
    _swap(schema_editor, apps.get_model("calls", "Call"), old=NEW, new=OLD)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0023_livekit_event_happened_at"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                *(migrations.RemoveIndex(model_name="call", name=index.name) for index in OLD),
                *(migrations.AddIndex(model_name="call", index=index) for index in NEW),
            ],
        ),
    ]
