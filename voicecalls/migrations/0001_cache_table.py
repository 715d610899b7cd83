"""The database cache's table (Django's default cache, `CACHE_URL`), made by `migrate`
so every database the app runs on has it, test databases included. The create
throttle's counters were kept there; they are rows of accounts.RateLimitState now."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # A no-op when the default cache is not a database cache (CACHE_URL=redis://...)
    # or the table exists.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = []

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
