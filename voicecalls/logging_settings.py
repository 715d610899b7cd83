"""The LOGGING setting (voicecalls.settings, kept apart for its length): one JSON line per
record with the request's and the call's ids (voicecalls.logging), secrets redacted on
every handler (voicecalls.redaction)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

LOG_FORMATS = ("json", "plain")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def logging_setting(*, log_format: str, level: str) -> dict:
    """LOGGING for `log_format` ("json" or "plain") at the root's `level`."""
    if log_format not in LOG_FORMATS:
        # Else logging's own "Unable to configure handler 'console'", naming neither.
        raise ImproperlyConfigured(f"LOG_FORMAT must be one of: {', '.join(LOG_FORMATS)}")
    # logging takes only upper-case names: "debug" failed as "Unable to configure root logger".
    level = level.upper()
    if level not in LOG_LEVELS:
        raise ImproperlyConfigured(f"LOG_LEVEL must be one of: {', '.join(LOG_LEVELS)}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_context": {"()": "voicecalls.logging.RequestContextFilter"},
            "redact_secrets": {"()": "voicecalls.logging.RedactSecretsFilter"},
        },
        "formatters": {
            "json": {
                "()": "voicecalls.logging.RedactingJsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s "
                "%(request_id)s %(organization_id)s %(call_id)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            },
            "plain": {
                "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            },
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["request_context", "redact_secrets"],
            },
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
            # It logs at INFO on every request that brings no X-Request-ID (most do not):
            # a line per request that says nothing the access log does not.
            "django_guid": {"level": "WARNING"},
        },
    }
