"""The list's `analysis_status` filter reads the call's copy (calls 0019): nothing reads
through `analysis_status_call` any more, and every change of an analysis wrote to it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("analysis", "0002_call_analysis_copy"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="callanalysis",
            name="analysis_status_call",
        ),
    ]
