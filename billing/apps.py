from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Usage and cost"

    def ready(self) -> None:
        from analysis.signals import call_analysis_usage_reported
        from billing.services import (
            call_analysis_usage_reported_receiver,
            call_status_changed_receiver,
            call_usage_reported_receiver,
        )
        from calls.signals import call_status_changed, call_usage_reported

        call_status_changed.connect(call_status_changed_receiver, dispatch_uid="billing.services")
        call_usage_reported.connect(call_usage_reported_receiver, dispatch_uid="billing.services")
        call_analysis_usage_reported.connect(
            call_analysis_usage_reported_receiver, dispatch_uid="billing.services"
        )
