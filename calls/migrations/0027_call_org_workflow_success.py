"""A workflow's calls by the analysis's verdict (`call_org_workflow_success`): built
CONCURRENTLY on PostgreSQL, so calls are written while it builds. Only calls with a
completed analysis are in it, so creating a call never writes it."""

from django.db import migrations, models

from voicecalls.db import index_add

INDEX = models.Index(
    condition=models.Q(("analysis_status", "completed")),
    fields=[
        "organization",
        "workflow",
        "analysis_success",
        "-created_at",
        "-id",
        "status",
        "started_at",
    ],
    name="call_org_workflow_success",
)


def forwards(apps, schema_editor) -> None:
    index_add(schema_editor, apps.get_model("calls", "Call"), INDEX)


def backwards(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.remove_index(model, INDEX, concurrently=True)
    else:
        schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0026_call_agent_left"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[migrations.AddIndex(model_name="call", index=INDEX)],
        ),
    ]
