from django.apps import AppConfig


class VoicecallsConfig(AppConfig):
    name = "voicecalls"
    verbose_name = "voicecalls"

    def ready(self) -> None:
        # Registers drf-spectacular extensions (the bearer scheme).
        from voicecalls import schema  # noqa: F401
        from voicecalls.throttling import rate_settings_check

        rate_settings_check()
