"""A call cannot start before it exists: a start stamped earlier (another host's clock,
before calls/lifecycle.py clamped it) counts from the call's creation, so the
`created_at` range a started_* window implies (calls/filters.py) finds every call."""

from django.db import migrations
from django.db.models import F


def started_at_clamp(apps, schema_editor):
    Call = apps.get_model("calls", "Call")
    Call.objects.filter(started_at__lt=F("created_at")).update(started_at=F("created_at"))


class Migration(migrations.Migration):
    dependencies = [("calls", "0008_open_calls_backfill")]

    operations = [migrations.RunPython(started_at_clamp, migrations.RunPython.noop)]
