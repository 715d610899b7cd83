from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Customer webhooks"

    def ready(self) -> None:
        from calls.signals import call_status_changed
        from webhooks.outbox import call_status_changed_receiver

        call_status_changed.connect(call_status_changed_receiver, dispatch_uid="webhooks.outbox")
