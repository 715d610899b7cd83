"""A trigger copies each analysis's status and verdict onto its call
(`calls_call.analysis_status`, `analysis_success`), and the copy is filled for the
analyses there already.

A trigger rather than the services: the list filters must agree with the analysis
rows whoever writes them (services, admin, shell). The fill runs after the trigger
exists, in batches, each under a SHARE lock on the analyses (writes to them wait for
that batch only, and none slips between its read and its copy).
"""

from django.db import migrations, transaction

POSTGRESQL_TRIGGER = """
CREATE FUNCTION analysis_call_copy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE calls_call SET analysis_status = NULL, analysis_success = NULL
        WHERE id = OLD.call_id;
    ELSE
        UPDATE calls_call SET analysis_status = NEW.status, analysis_success = NEW.success
        WHERE id = NEW.call_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER analysis_call_copy_insert_delete
AFTER INSERT OR DELETE ON analysis_callanalysis
FOR EACH ROW EXECUTE FUNCTION analysis_call_copy();

CREATE TRIGGER analysis_call_copy_update
AFTER UPDATE OF status, success ON analysis_callanalysis
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.success IS DISTINCT FROM NEW.success)
EXECUTE FUNCTION analysis_call_copy();
"""

POSTGRESQL_DROP = """
DROP TRIGGER analysis_call_copy_update ON analysis_callanalysis;
DROP TRIGGER analysis_call_copy_insert_delete ON analysis_callanalysis;
DROP FUNCTION analysis_call_copy();
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER analysis_call_copy_insert AFTER INSERT ON analysis_callanalysis
    BEGIN
        UPDATE calls_call SET analysis_status = NEW.status, analysis_success = NEW.success
        WHERE id = NEW.call_id;
    END""",
    """CREATE TRIGGER analysis_call_copy_update AFTER UPDATE OF status, success
    ON analysis_callanalysis
    WHEN OLD.status IS NOT NEW.status OR OLD.success IS NOT NEW.success
    BEGIN
        UPDATE calls_call SET analysis_status = NEW.status, analysis_success = NEW.success
        WHERE id = NEW.call_id;
    END""",
    """CREATE TRIGGER analysis_call_copy_delete AFTER DELETE ON analysis_callanalysis
    BEGIN
        UPDATE calls_call SET analysis_status = NULL, analysis_success = NULL
        WHERE id = OLD.call_id;
    END""",
]
SQLITE_DROP = [
    "DROP TRIGGER analysis_call_copy_insert",
    "DROP TRIGGER analysis_call_copy_update",
    "DROP TRIGGER analysis_call_copy_delete",
]

BATCH = 2_000
# The next batch's last analysis (by call id), and the copy of a batch.
POSTGRESQL_BATCH_END = """
SELECT call_id FROM analysis_callanalysis WHERE call_id > %s
ORDER BY call_id OFFSET %s LIMIT 1
"""
POSTGRESQL_FILL = """
UPDATE calls_call c SET analysis_status = a.status, analysis_success = a.success
FROM analysis_callanalysis a
WHERE a.call_id = c.id AND a.call_id > %s AND (%s::uuid IS NULL OR a.call_id <= %s)
"""
SQLITE_FILL = """
UPDATE calls_call SET
    analysis_status = (SELECT status FROM analysis_callanalysis WHERE call_id = calls_call.id),
    analysis_success = (SELECT success FROM analysis_callanalysis WHERE call_id = calls_call.id)
WHERE id IN (SELECT call_id FROM analysis_callanalysis)
"""


def _fill_postgresql(connection) -> None:
    after = "00000000-0000-0000-0000-000000000000"
    while after is not None:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("LOCK TABLE analysis_callanalysis IN SHARE MODE")
            cursor.execute(POSTGRESQL_BATCH_END, [after, BATCH - 1])
            row = cursor.fetchone()
            end = row[0] if row else None
            cursor.execute(POSTGRESQL_FILL, [after, end, end])
        after = end


def copy_and_keep(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_TRIGGER, params=None)
        _fill_postgresql(connection)
        return
    with transaction.atomic(using=connection.alias):
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement)
        schema_editor.execute(SQLITE_FILL)


def stop_keeping(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_DROP, params=None)
        return
    for statement in SQLITE_DROP:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    atomic = False  # the fill commits batch by batch

    dependencies = [
        ("analysis", "0001_initial"),
        ("calls", "0019_call_analysis_copy"),
    ]

    operations = [migrations.RunPython(copy_and_keep, stop_keeping)]
