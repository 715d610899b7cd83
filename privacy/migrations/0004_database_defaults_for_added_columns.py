"""The columns added to existing tables get their defaults in the database too
(README "Upgrading"): the release before them, still serving while `migrate` runs,
inserts rows without them, which failed NOT NULL. On PostgreSQL only the column's
DEFAULT changes: no rewrite, no scan."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('privacy', '0003_retained_identity'),
    ]

    operations = [
        migrations.AlterField(
            model_name='erasure',
            name='recordings_deleted',
            field=models.PositiveIntegerField(db_default=0, default=0),
        ),
    ]
