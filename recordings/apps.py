from django.apps import AppConfig


class RecordingsConfig(AppConfig):
    name = "recordings"
    verbose_name = "Call recordings"

    def ready(self) -> None:
        from calls.signals import call_status_changed
        from recordings.services import call_status_changed_receiver

        call_status_changed.connect(
            call_status_changed_receiver, dispatch_uid="recordings.services"
        )
