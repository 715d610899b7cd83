"""`Idempotency-Key` for POST requests: one key, one outcome, for 24 hours.

The key's record is committed before the work starts so a concurrent request sees
it (409 while in flight); the work and the stored answer commit together, so a
replay returns exactly what the first request returned. A failed first attempt
leaves no record, so the client may retry with the same key.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from accounts.models import Organization
from calls.models import IdempotencyRecord
from voicecalls.errors import Conflict, UnprocessableEntity

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_LENGTH = 255
# The header as the API reference describes it, on every POST that honours it.
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    # No control character (as idempotency_key refuses them, a tab too), and since
    # servers drop a header value's surrounding whitespace, at least one other character.
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$",
    },
    OpenApiParameter.HEADER,
    description=(
        "Up to 255 printable characters. The same key and body within 24 hours return the first "
        "response; another body → 422; while the first is still running → 409."
    ),
)


def _canonical(body: object) -> str:
    """`json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)`: the
    parser takes bodies nested up to 1024 levels (unknown fields are ignored, not
    refused), deeper than the encoder's recursion limit; those are written without
    recursion, to the same text."""
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    except RecursionError:
        pass
    out: list[str] = []
    # Work items: a value to write, or literal text (a closing bracket, a separator).
    stack: list[tuple[bool, object]] = [(False, body)]
    while stack:
        is_text, item = stack.pop()
        if is_text:
            out.append(item)  # type: ignore[arg-type]
        elif isinstance(item, dict):
            out.append("{")
            stack.append((True, "}"))
            pairs = sorted(item.items())
            for index in range(len(pairs) - 1, -1, -1):
                key, value = pairs[index]
                stack.append((False, value))
                stack.append((True, ("," if index else "") + json.dumps(key) + ":"))
        elif isinstance(item, (list, tuple)):
            out.append("[")
            stack.append((True, "]"))
            for index in range(len(item) - 1, -1, -1):
                stack.append((False, item[index]))
                if index:
                    stack.append((True, ","))
        else:
            out.append(json.dumps(item, default=str))
    return "".join(out)


# The body's fingerprint is keyed (HMAC-SHA256 under a key derived from SECRET_KEY): a
# plain SHA-256 of a slug and a phone number is that number to whoever reads the table,
# also once an erasure removed it everywhere else (docs/privacy.md).
_FINGERPRINT_SALT = "voicecalls.calls.idempotency-request"


def _fingerprints(body: object) -> list[str]:
    """What a record of this body may hold: its fingerprint under SECRET_KEY (what new
    records store), under each SECRET_KEY_FALLBACKS (records made before a rotation),
    and the plain SHA-256 records stored before fingerprints were keyed (24 h at most)."""
    canonical = _canonical(body)
    keyed = [
        salted_hmac(_FINGERPRINT_SALT, canonical, secret=secret, algorithm="sha256").hexdigest()
        for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    ]
    return [*keyed, hashlib.sha256(canonical.encode()).hexdigest()]


def _fingerprint(body: object) -> str:
    return _fingerprints(body)[0]


def _claim(
    *, organization: Organization, key: str, request_hash: str, now: datetime
) -> IdempotencyRecord | None:
    """Insert the key's record (created `now`); return None when we own it, else the
    existing record."""
    for _ in range(2):
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    organization=organization, key=key, request_hash=request_hash, created_at=now
                )
            return None
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(organization=organization, key=key).first()
            if existing is None:
                continue  # Deleted between our insert and read: try once more.
            expired = existing.created_at < now - timedelta(
                seconds=settings.IDEMPOTENCY_TTL_SECONDS
            )
            abandoned = not existing.is_complete and existing.created_at < now - timedelta(
                seconds=settings.IDEMPOTENCY_LOCK_SECONDS
            )
            if expired:
                # Conditional delete: only one of several racing requests takes it over.
                IdempotencyRecord.objects.filter(
                    pk=existing.pk, created_at=existing.created_at
                ).delete()
                continue
            if abandoned and _abandoned_delete(existing):
                continue
            return existing
    raise Conflict("A request with this Idempotency-Key is in progress.")


def _abandoned_delete(record: IdempotencyRecord) -> bool:
    """Delete this unanswered record if the request that made it is dead: a running
    one holds its row lock (`idempotent_call`), a dead one's connection took the lock
    along. Whether it went. Deleted under our own lock, so a request that was only
    slow to start finds its record gone and runs nothing. (SQLite has no row locks:
    one writer at a time, the record's age alone decides.)"""
    with transaction.atomic():
        free = IdempotencyRecord.objects.select_for_update(skip_locked=True).filter(
            pk=record.pk, created_at=record.created_at, response_status__isnull=True
        )
        taken = list(free.values_list("pk", flat=True))
        return bool(taken) and IdempotencyRecord.objects.filter(pk__in=taken).delete()[0] > 0


def idempotent_answer_exists(*, organization_id: object, key: str, body: object) -> bool:
    """Whether a request with this key and body would get a stored answer (a retry of a
    create that was done): the create throttle lets it through, since it creates
    nothing."""
    since = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    return IdempotencyRecord.objects.filter(
        organization_id=organization_id,
        key=key,
        request_hash__in=_fingerprints(body),
        response_status__isnull=False,
        created_at__gte=since,
    ).exists()


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The request's `Idempotency-Key` (1 to 255 printable characters), or None without
    one. A control character is no header's (RFC 9110), and PostgreSQL stores no NUL."""
    key = headers.get("Idempotency-Key")
    if key is not None and (not 0 < len(key) <= MAX_KEY_LENGTH or _CONTROL_CHARACTER.search(key)):
        raise serializers.ValidationError(
            {"Idempotency-Key": [f"Must be 1 to {MAX_KEY_LENGTH} printable characters."]}
        )
    return key


def idempotent_call(
    *,
    organization: Organization,
    key: str,
    body: object,
    run: Callable[[], tuple[int, dict]],
    on_replay: Callable[[], None] | None = None,
) -> tuple[int, dict]:
    """Run `run` once per (organization, key, body); replays get the stored answer
    (`on_replay` called first)."""
    fingerprints = _fingerprints(body)
    request_hash = fingerprints[0]
    claimed_at = timezone.now()
    existing = _claim(organization=organization, key=key, request_hash=request_hash, now=claimed_at)
    if existing is not None:
        if existing.request_hash not in fingerprints:
            raise UnprocessableEntity(
                # Another body, or the same key sent to another endpoint (a test event's).
                "This Idempotency-Key was used for a different request.",
                code="idempotency_key_reused",
            )
        if not existing.is_complete:
            raise Conflict(
                "A request with this Idempotency-Key is still in progress.",
                code="idempotency_key_in_progress",
            )
        if on_replay is not None:
            on_replay()
        return existing.response_status, existing.response_body
    # Our record only: one taken over by a retry (ours stalled past
    # IDEMPOTENCY_LOCK_SECONDS before it ran) carries the retry's answer.
    ours = IdempotencyRecord.objects.filter(
        organization=organization, key=key, created_at=claimed_at
    )
    try:
        with transaction.atomic():
            # Held until the answer commits: a retry past IDEMPOTENCY_LOCK_SECONDS sees
            # this request alive (409), not abandoned. Gone, a retry took the key over
            # while this one stalled before running: it runs nothing (one key, one call).
            if ours.select_for_update().values_list("pk", flat=True).first() is None:
                raise Conflict(
                    "A retry with this Idempotency-Key took it over.",
                    code="idempotency_key_in_progress",
                )
            status_code, response_body = run()
            ours.update(response_status=status_code, response_body=response_body)
    except BaseException:
        ours.delete()
        raise
    return status_code, response_body
