from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "analysis"
    verbose_name = "Post-call analysis"

    def ready(self) -> None:
        from analysis.services import call_status_changed_receiver
        from calls.signals import call_status_changed

        call_status_changed.connect(call_status_changed_receiver, dispatch_uid="analysis.services")
