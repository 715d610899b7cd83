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
        # app with models (post_migrate is sent app by app, to those only), so every
        # permission the groups name, of whichever app, exists by then.
        last = [config for config in apps.get_app_configs() if config.models_module][-1]
        post_migrate.connect(_ensure_groups, sender=last)
