"""The call carries a copy of its analysis's status and verdict, and the two list
indexes that filter on them (`Call.Meta.indexes`). Migration analysis 0002 fills the
copy and keeps it.

The columns are added without a default (no table rewrite). On PostgreSQL the indexes
are built CONCURRENTLY, so calls are written and listed meanwhile; elsewhere as usual.
"""

from django.db import migrations, models

INDEXES = [
    models.Index(
        condition=models.Q(analysis_status__isnull=False),
        fields=[
            "organization",
            "analysis_status",
            "-created_at",
            "-id",
            "workflow",
            "status",
            "started_at",
        ],
        name="call_org_analysis_status",
    ),
    models.Index(
        condition=models.Q(analysis_status="completed"),
        fields=[
            "organization",
            "analysis_success",
            "-created_at",
            "-id",
            "workflow",
            "status",
            "started_at",
        ],
        name="call_org_analysis_success",
    ),
]


def add_indexes(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    concurrently = schema_editor.connection.vendor == "postgresql"
    for index in INDEXES:
        if concurrently:
            # A build that failed half-way leaves an invalid index behind: start afresh.
            schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index.name}"')
            schema_editor.add_index(model, index, concurrently=True)
        else:
            schema_editor.add_index(model, index)


def remove_indexes(apps, schema_editor) -> None:
    model = apps.get_model("calls", "Call")
    for index in INDEXES:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.remove_index(model, index, concurrently=True)
        else:
            schema_editor.remove_index(model, index)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [
        ("calls", "0018_list_indexes_carry_filter_columns"),
    ]

    operations = [
        migrations.AddField(
            model_name="call",
            name="analysis_status",
            field=models.CharField(blank=True, editable=False, max_length=10, null=True),
        ),
        migrations.AddField(
            model_name="call",
            name="analysis_success",
            field=models.BooleanField(blank=True, editable=False, null=True),
        ),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(add_indexes, remove_indexes)],
            state_operations=[
                migrations.AddIndex(model_name="call", index=index) for index in INDEXES
            ],
        ),
    ]
