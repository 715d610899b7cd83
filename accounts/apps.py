from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _ensure_groups(sender: AppConfig, **kwargs: object) -> None:
    from accounts.services import support_group_ensure

    support_group_ensure()


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Organizations and API keys"

    def ready(self) -> None:
        # Keep the staff groups right after every migrate. Hooked on the last installed
        # app (post_migrate runs app by app), so every permission the groups name, of
        # whichever app, exists by then.
        post_migrate.connect(_ensure_groups, sender=list(apps.get_app_configs())[-1])
