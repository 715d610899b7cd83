"""Staff suspend an organization (README "Suspending an organization"). A nullable
column (NULL by default) and one with a database default: the release before it goes
on inserting organizations while `migrate` runs (README "Upgrading")."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0009_database_defaults_for_added_columns'),
    ]

    operations = [
        migrations.AddField(
            model_name='organization',
            name='suspended_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='Empty: not suspended.', null=True),
        ),
        migrations.AddField(
            model_name='organization',
            name='suspension_reason',
            field=models.CharField(blank=True, db_default='', default='', editable=False, help_text='Why staff suspended it; staff only, never shown to the customer.', max_length=200),
        ),
    ]
