"""Calls keep their LiveKit room's name (inbound phone calls' rooms are not
`call-<id>`): existing calls get `call-<id>`, the name they always had."""

from django.db import migrations, models

def backfill(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        expression = "'call-' || id::text"
    else:  # SQLite keeps uuids as 32 hex digits
        expression = (
            "'call-' || substr(id, 1, 8) || '-' || substr(id, 9, 4) || '-' || "
            "substr(id, 13, 4) || '-' || substr(id, 17, 4) || '-' || substr(id, 21)"
        )
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE calls_call SET room_name = {expression} WHERE room_name IS NULL")


class Migration(migrations.Migration):
    dependencies = [("calls", "0011_call_phone")]

    operations = [
        migrations.AddField(
            model_name="call",
            name="participant_identity",
            field=models.CharField(blank=True, max_length=200, null=True),
        ),
        migrations.AddField(
            model_name="call",
            name="room_name",
            field=models.CharField(editable=False, max_length=200, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True),
    ]
