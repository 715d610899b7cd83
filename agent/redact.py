"""Provider keys, and inbound callers' numbers, kept out of the agent process's logs.

The worker receives each call's provider keys in its session. A provider refusing one
may quote it back in an exception, which livekit-agents and its plugins log as they
are. Every session's keys are registered here when the API answers, and every log
record made in the process from then on (any logger, its message, exception and
stack) has them replaced before any handler sees it.

LiveKit names an inbound caller's room and SIP participant after their number
(`inbound-_<caller>_<random>`, `sip_<caller>`), and livekit-agents logs the room of
every job it is offered and of its job processes' lines: once `log_redaction_install`
ran (the worker's start, each job process's), the number in them is masked as
`agent.phone.masked` does, and the fields livekit-agents marks as personal (what a
caller said, a tool's arguments) are replaced (docs/privacy.md: logs carry no numbers
and no transcript words).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from agent.phone import masked

REDACTED = "[redacted]"
# Shorter strings are no keys (the API takes 8 characters and up), and replacing them
# would mangle ordinary text.
MIN_SECRET_CHARS = 8

# Longest first: one key may contain another.
_secrets: list[str] = []
_installed = False


def session_keys(data: object) -> set[str]:
    """Every provider key in a session (components and their fallbacks, all agents),
    and its tool signing secrets."""
    found: set[str] = set()
    if isinstance(data, dict):
        for secret in data.get("tool_signing_secrets") or []:
            if isinstance(secret, str) and secret:
                # And its key alone, as a verifier's error may print it.
                found |= {secret, secret.removeprefix("whsec_")}
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            key = node.get("api_key")
            if isinstance(key, str) and key:
                found.add(key)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def log_secrets_add(secrets: Iterable[str]) -> None:
    """Keep `secrets` out of every log record made from now on."""
    new = {s for s in secrets if len(s) >= MIN_SECRET_CHARS} - set(_secrets)
    if not new:
        return
    _secrets[:] = sorted({*_secrets, *new}, key=len, reverse=True)
    _install()


# A caller's number in the name LiveKit gives their room or SIP participant.
_CALLER_NAMED = re.compile(r"(inbound-_|sip_)(\+?[0-9]{5,})")


def redacted(text: str) -> str:
    """`text` with every registered secret replaced and callers' numbers masked."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _CALLER_NAMED.sub(lambda found: found.group(1) + masked(found.group(2)), text)


def log_redaction_install() -> None:
    """Mask callers' numbers (and keys, once registered) in every log record made in
    this process from now on."""
    _install()


def _install() -> None:
    global _installed
    if _installed:
        return
    # Logger.makeRecord, not the record factory: a record's `extra` fields (livekit-agents
    # logs errors as `extra={"error": ...}`) are set on it after the factory returns.
    make_record = logging.Logger.makeRecord

    def make_record_redacted(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(self, *args, **kwargs)
        try:
            return _record_redacted(record)
        except Exception:
            # Never the caller's error (an odd `exc_info`), never a secret left in it:
            # the record keeps its message's text alone, redacted.
            record.msg = redacted(_text_of(record.msg))
            record.args = record.exc_info = record.exc_text = record.stack_info = None
            return record

    logging.Logger.makeRecord = make_record_redacted  # type: ignore[method-assign]
    _installed = True


# What every record has; anything else on one came in its `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _record_redacted(record: logging.LogRecord) -> logging.LogRecord:
    try:
        message = record.getMessage()
    except Exception:
        # A malformed call: logging reports it, printing its arguments as they are.
        record.msg = redacted(_text_of(record.msg))
        record.args = _args_redacted(record.args)
    else:
        clean = redacted(message)
        if clean != message:
            record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        clean = redacted(text)
        if clean != text:
            # Formatters print `exc_text` as given; given `exc_info`, some format it anew.
            record.exc_info, record.exc_text = None, clean
    if record.stack_info:
        record.stack_info = redacted(record.stack_info)
    for name, value in list(record.__dict__.items()):
        if name in _RECORD_ATTRIBUTES or value is None:
            continue
        record.__dict__[name] = REDACTED if _is_personal(name) else _value_redacted(value)
    return record


def _is_personal(name: str) -> bool:
    """An `extra` field livekit-agents marks as personal: a `pii` segment in its name
    (`lk.pii.user_input`, the words of a caller it did not answer; `lk.pii.arguments`,
    a tool call's), its telemetry's own rule (livekit.agents.telemetry.pii)."""
    return "pii" in name.split(".")


def _text_of(value: object) -> str:
    try:
        return str(value)
    except Exception:  # an object whose text cannot be made (a broken __str__)
        return f"<unprintable {type(value).__name__}>"


def _args_redacted(args: object) -> object:
    if isinstance(args, tuple):
        return tuple(_value_redacted(arg) for arg in args)
    if isinstance(args, dict):
        return {key: _value_redacted(arg) for key, arg in args.items()}
    return args


def _value_redacted(value: object) -> object:
    """An `extra` value, or its text redacted when that text holds a secret."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:
        return value
    clean = redacted(text)
    return value if clean == text else clean
