"""The list's `direction` and `end_reason` filters (`call_org_direction`,
`call_org_end_reason`): built CONCURRENTLY on PostgreSQL, so calls are written while
they build. Only ended calls (with an end reason) are in the second, so creating a
call never writes it."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEXES = [
    models.Index(
        fields=[
            "organization",
            "direction",
            "-created_at",
            "-id",
            "workflow",
            "status",
            "end_reason",
            "started_at",
        ],
        name="call_org_direction",
    ),
    models.Index(
        condition=models.Q(("end_reason__isnull", False)),
        fields=[
            "organization",
            "end_reason",
            "-created_at",
            "-id",
            "direction",
            "workflow",
            "status",
            "started_at",
        ],
        name="call_org_end_reason",
    ),
]


def forwards(apps, schema_editor) -> None:
    for index in INDEXES:
        index_add(schema_editor, apps.get_model("calls", "Call"), index)


def backwards(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    for index in INDEXES:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, index, concurrently=True)
        else:
            schema_editor.remove_index(model, index)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0028_call_end_reason_detail"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                migrations.AddIndex(model_name="call", index=index) for index in INDEXES
            ],
        ),
    ]
