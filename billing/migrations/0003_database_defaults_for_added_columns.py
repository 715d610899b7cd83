"""The columns added to existing tables get their defaults in the database too
(README "Upgrading"): the release before them, still serving while `migrate` runs,
inserts rows without them, which failed NOT NULL. On PostgreSQL only the column's
DEFAULT changes: no rewrite, no scan."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0002_usage_sessions'),
    ]

    operations = [
        migrations.AlterField(
            model_name='callcost',
            name='usage_sessions',
            field=models.JSONField(blank=True, db_default={}, default=dict),
        ),
    ]
