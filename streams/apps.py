from django.apps import AppConfig


class StreamsConfig(AppConfig):
    name = "streams"
    verbose_name = "live call streams"

    def ready(self) -> None:
        from calls.signals import call_events_recorded, call_status_changed
        from streams import receivers

        call_status_changed.connect(
            receivers.call_status_changed_receiver, dispatch_uid="streams.status"
        )
        call_events_recorded.connect(
            receivers.call_events_recorded_receiver, dispatch_uid="streams.events"
        )
