"""Rate limits count in integer microseconds (accounts/rates.py): the theoretical
arrival times kept in float seconds are carried over, rounded to the microsecond."""

from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Cast, Round


def to_microseconds(apps, schema_editor) -> None:
    state = apps.get_model("accounts", "RateLimitState")
    state.objects.update(
        tat_us=Cast(Round(F("tat") * 1_000_000), output_field=models.BigIntegerField())
    )


def forget(apps, schema_editor) -> None:
    # Going back: the float column comes back on an empty table (a rate's state is at
    # most a window ahead; losing it lets one burst through).
    apps.get_model("accounts", "RateLimitState").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0007_privacy_retention"),
    ]

    operations = [
        migrations.AddField(
            model_name="ratelimitstate",
            name="tat_us",
            field=models.BigIntegerField(
                null=True, help_text="Theoretical arrival time, in Unix microseconds."
            ),
        ),
        migrations.RunPython(to_microseconds, migrations.RunPython.noop),
        migrations.RemoveField(model_name="ratelimitstate", name="tat"),
        migrations.RunPython(migrations.RunPython.noop, forget),
        migrations.AlterField(
            model_name="ratelimitstate",
            name="tat_us",
            field=models.BigIntegerField(help_text="Theoretical arrival time, in Unix microseconds."),
        ),
    ]
