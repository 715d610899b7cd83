"""Secrets, and the user ids a URL may ask for, never reach a log line: the patterns,
the logging filter every handler carries (settings.LOGGING), and gunicorn's logger
class (gunicorn.conf.py), which masks the access log's request line, query string and
headers the same way.

Pure Python plus gunicorn: the gunicorn master loads this before Django is set up.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

REDACTED = "[redacted]"

# Query parameters named like a credential (`api_key`, `token`, `client_secret`,
# `password`, `authorization`, `sig`...): the value is masked, whatever its shape.
_SENSITIVE_NAME = (
    r"[^\s=&;?#\"'<>]*"
    r"(?:key|token|secret|passw|pwd|auth|signature|sig|credential|session|jwt)"
    r"[^\s=&;?#\"'<>]*"
)
# Query parameters naming a person (docs/privacy.md: logs carry ids, never user ids or
# numbers): the calls list's `user_id` filter, and the admin's search (`q`, carried on
# as `_changelist_filters`), by which staff find a user's calls and erasures.
_PERSONAL_NAME = (
    r"(?:user(?:_|%5[Ff])id[^\s=&;?#\"'<>]*|q|(?:_|%5[Ff])changelist(?:_|%5[Ff])filters)"
)
# Shapes of secrets that could reach a log line: bearer credentials, our API keys
# (8-char prefix, dot, 32-char secret; the dot perhaps percent-encoded), webhook
# signing secrets, provider keys that follow well-known formats, JSON/form fields
# named like a key, and query parameters named like one.
SECRET_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;\"']+"), r"\1 " + REDACTED),
    (re.compile(r"\b[A-Za-z0-9]{8}(?:\.|%2[Ee])[A-Za-z0-9]{32}\b"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=%]+"), "whsec_" + REDACTED),
    (re.compile(r"\b(sk|pk|rk|gsk|xai)[-_][A-Za-z0-9_\-]{8,}"), r"\1-" + REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),  # Google API keys
    (
        re.compile(
            r"(?i)([\"']?(?:api[_-]?key|secret|password|token|authorization)[\"']?\s*[:=]\s*)"
            r"([\"'])(?:(?!\2).)*\2"
        ),
        r"\1\2" + REDACTED + r"\2",
    ),
    (re.compile(rf"(?i)([?&;]{_SENSITIVE_NAME}=)[^&;#\s\"'<>]*"), r"\1" + REDACTED),
    (re.compile(rf"(?i)([?&;]{_PERSONAL_NAME}=)[^&;#\s\"'<>]*"), r"\1" + REDACTED),
]

# Attributes every LogRecord has; anything else on a record is an `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}
_PLAIN_TYPES = (int, float, bool, type(None))


def redact(text: str) -> str:
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    """`value` with secrets masked: strings redacted, containers walked, and any other
    object replaced by its redacted text only when that text held a secret (a
    formatter would print it: django.request's `request` shows the query string)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN_TYPES):
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(item) for item in value)
    try:
        text = str(value)
    except Exception:
        return value
    masked = redact(text)
    return value if masked == text else masked


class RedactSecretsFilter(logging.Filter):
    """Rewrites the message (with its arguments merged in), the exception text and
    every extra attribute with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES:
                setattr(record, name, _redact_value(value))
        return True


_FILTER = RedactSecretsFilter()


class RedactingLogger(GunicornLogger):
    """gunicorn's logger with every access line (request line, query string, headers,
    referer: whatever the format prints) and every error-log record masked, uvicorn's
    own lines included (gunicorn.streams.conf.py).

    The access line is masked once formatted, not atom by atom: whatever atoms a format
    prints, the line holds no secret.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # On the handlers, not the loggers: uvicorn's workers (the streams' service) log
        # their own access and error lines to loggers of their own given these handlers.
        # The same filter object on each: added once however often a reload runs setup.
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(_FILTER)
        self.own_atoms = all(
            name in _OWN_ATOMS or _RESPONSE_HEADER.fullmatch(name)
            for name in _FORMAT_ATOM.findall(cfg.access_log_format)
        )

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        """The atoms our access format prints, computed as gunicorn does. Its own
        `atoms` also makes ~20 others and one per request header and WSGI environ
        variable for every line, a third of the line's cost (bench/README.md); a format
        that prints any of those gets them."""
        if not self.own_atoms:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status
        sent = getattr(resp, "sent", None)
        atoms = {
            "h": environ.get("REMOTE_ADDR", "-"),
            "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
            "s": status.split(None, 1)[0] if isinstance(status, str) else status,
            "b": str(sent) if sent is not None else "-",
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
        }
        atoms.update((f"{{{name.lower()}}}o", value) for name, value in resp.headers)
        return atoms


# An atom of an access log format (`%(s)s`, `%({x-request-id}o)s`), and those computed
# by `RedactingLogger.atoms`: gunicorn.conf.py's and every response header.
_FORMAT_ATOM = re.compile(r"%\(([^)]+)\)s")
_OWN_ATOMS = frozenset("hrsbM")
_RESPONSE_HEADER = re.compile(r"\{[^}]+\}o")
