"""The columns added to existing tables get their defaults in the database too
(README "Upgrading"): the release before them, still serving while `migrate` runs,
inserts rows without them, which failed NOT NULL. On PostgreSQL only the column's
DEFAULT changes: no rewrite, no scan."""

import accounts.validators
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0008_rate_limit_state_microseconds'),
    ]

    operations = [
        migrations.AlterField(
            model_name='organization',
            name='allowed_destination_countries',
            field=models.JSONField(blank=True, db_default=[], default=list, help_text='ISO 3166 region codes outbound calls may reach, e.g. ["US", "CA"]; empty: none.', validators=[accounts.validators.region_codes_validator]),
        ),
        migrations.AlterField(
            model_name='organization',
            name='max_outbound_calls_per_day',
            field=models.PositiveIntegerField(db_default=500, default=500, help_text='Ceiling of outbound_calls_per_day (per UTC day).'),
        ),
        migrations.AlterField(
            model_name='organization',
            name='max_outbound_calls_per_minute',
            field=models.PositiveIntegerField(db_default=10, default=10, help_text='Ceiling of outbound_calls_per_minute.'),
        ),
        migrations.AlterField(
            model_name='organization',
            name='open_calls',
            field=models.PositiveIntegerField(db_default=0, default=0, editable=False, help_text='Calls not yet ended (pending, connecting, active), kept as a counter.'),
        ),
    ]
