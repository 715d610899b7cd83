# Issue 8 (benchmarks at a million calls): indexes that cover started_* windows (alone
# or with workflow_id), and exact per-(organization, status) call counts kept by a trigger
# so `total` of the unfiltered and status-only lists costs a handful of rows, not a
# scan of every call. See bench/README.md for the measurements.

import django.db.models.deletion
from django.db import migrations, models

# A row trigger: it fires only when a row is inserted or deleted, or its status or
# organization changes (the WHEN clause), so the many updates of a call's aggregates
# and timestamps never reach it. Each session adds to its own shard (backend pid
# modulo 16), so concurrent transactions seldom queue on one counter row.
CREATE_TRIGGER = """
CREATE FUNCTION calls_call_count_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard smallint := pg_backend_pid() % 16;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO calls_callcount AS c (organization_id, status, shard, count)
        VALUES (OLD.organization_id, OLD.status, my_shard, -1)
        ON CONFLICT (organization_id, status, shard) DO UPDATE SET count = c.count - 1;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO calls_callcount AS c (organization_id, status, shard, count)
        VALUES (NEW.organization_id, NEW.status, my_shard, 1)
        ON CONFLICT (organization_id, status, shard) DO UPDATE SET count = c.count + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION calls_call_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM calls_callcount;
    RETURN NULL;
END;
$$;

CREATE TRIGGER calls_call_count_insert_delete
AFTER INSERT OR DELETE ON calls_call
FOR EACH ROW EXECUTE FUNCTION calls_call_count_change();

CREATE TRIGGER calls_call_count_update
AFTER UPDATE OF organization_id, status ON calls_call
FOR EACH ROW
WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id
      OR OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION calls_call_count_change();

CREATE TRIGGER calls_call_count_truncate
AFTER TRUNCATE ON calls_call
FOR EACH STATEMENT EXECUTE FUNCTION calls_call_count_truncate();
"""

# The trigger's lock (SHARE ROW EXCLUSIVE) holds writers off until this migration
# commits, so the counts start exact.
BACKFILL = """
INSERT INTO calls_callcount (organization_id, status, shard, count)
SELECT organization_id, status, 0, count(*) FROM calls_call GROUP BY organization_id, status
"""

DROP_TRIGGER = """
DROP TRIGGER calls_call_count_truncate ON calls_call;
DROP TRIGGER calls_call_count_update ON calls_call;
DROP TRIGGER calls_call_count_insert_delete ON calls_call;
DROP FUNCTION calls_call_count_truncate();
DROP FUNCTION calls_call_count_change();
"""


def create_trigger(apps, schema_editor):
    # SQLite (the single-machine mode) counts rows instead: see calls.selectors.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_TRIGGER, params=None)
        schema_editor.execute(BACKFILL, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
        ("calls", "0002_lifecycle_events"),
        ("workflows", "0001_initial"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="call", name="call_org_started"),
        migrations.AddIndex(
            model_name="call",
            index=models.Index(
                fields=["organization", "started_at", "created_at", "id"],
                name="call_org_started_order",
            ),
        ),
        migrations.AddIndex(
            model_name="call",
            index=models.Index(
                fields=["organization", "workflow", "started_at", "created_at", "id"],
                name="call_org_workflow_started",
            ),
        ),
        migrations.CreateModel(
            name="CallCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("connecting", "Connecting"),
                            ("active", "Active"),
                            ("completed", "Completed"),
                            ("failed", "Failed"),
                            ("disconnected", "Disconnected"),
                            ("timeout", "Timeout"),
                        ],
                        max_length=12,
                    ),
                ),
                ("shard", models.SmallIntegerField()),
                ("count", models.BigIntegerField()),
                (
                    "organization",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="accounts.organization",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("organization", "status", "shard"), name="call_count_unique"
                    )
                ],
            },
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
