from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Customer webhooks"

    def ready(self) -> None:
        from analysis.signals import call_analyzed
        from calls.signals import call_status_changed
        from webhooks.outbox import call_analyzed_receiver, call_status_changed_receiver

        call_status_changed.connect(call_status_changed_receiver, dispatch_uid="webhooks.outbox")
        call_analyzed.connect(call_analyzed_receiver, dispatch_uid="webhooks.outbox")
