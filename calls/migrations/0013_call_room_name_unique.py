"""The room name is unique: an inbound call is created once per room. Its own
migration (transaction) after the backfill: PostgreSQL does not alter a table with
the backfill's trigger events pending."""

from django.db import migrations

import calls.models


class Migration(migrations.Migration):
    dependencies = [("calls", "0012_call_room_name")]

    operations = [
        migrations.AlterField(
            model_name="call",
            name="room_name",
            field=calls.models.RoomNameField(editable=False, max_length=200, unique=True),
        ),
    ]
