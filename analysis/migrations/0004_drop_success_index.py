"""The admin dashboard's success rates read the call's copy of the verdict (analysis
0002): nothing reads through `analysis_success_call` any more, and every change of an
analysis's verdict wrote to it."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("analysis", "0003_drop_status_index"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="callanalysis",
            name="analysis_success_call",
        ),
    ]
