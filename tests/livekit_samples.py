"""Real LiveKit webhook payloads (tests/data/livekit/*.json), re-aimed at a call and
signed exactly as LiveKit signs them, with the real livekit-api."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.test import Client
from livekit import api

DATA = Path(__file__).parent / "data" / "livekit"
URL = "/api/v1/webhooks/livekit"


def sample(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def webhook_body(
    name: str,
    *,
    call_id: object,
    identity: str | None = None,
    reason: str | None = None,
    event_id: str | None = None,
    created_at: float | None = None,
) -> str:
    """The sample `name`, moved to the call's room (and the user's identity), stamped
    `created_at` (Unix seconds; default now)."""
    payload = sample(name)
    payload["room"]["name"] = f"call-{call_id}"
    if "participant" in payload:
        if payload["participant"]["identity"].startswith("user-"):
            payload["participant"]["identity"] = identity or f"user-{call_id}"
        elif identity:
            payload["participant"]["identity"] = identity
        if reason is not None:
            payload["participant"]["disconnectReason"] = reason
    payload["id"] = event_id or f"EV_{uuid.uuid4().hex[:12]}"
    # Stamped now, as LiveKit stamps an event it sends (created_at: a late delivery is
    # timed by it; tests of that set their own).
    payload["createdAt"] = str(int(created_at if created_at is not None else time.time()))
    return json.dumps(payload)


def sign(body: str | bytes, *, key: str | None = None, secret: str | None = None) -> str:
    """A JWT as LiveKit makes one for `body` (its exact bytes, UTF-8 if text)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode()
    return (
        api.AccessToken(key or settings.LIVEKIT_API_KEY, secret or settings.LIVEKIT_API_SECRET)
        .with_sha256(digest)
        .to_jwt()
    )


def post_webhook(
    body: str | bytes, *, authorization: str | None = None, client: Client | None = None
):
    return (client or Client()).post(
        URL,
        data=body,
        content_type="application/webhook+json",
        HTTP_AUTHORIZATION=sign(body) if authorization is None else authorization,
    )


def send(name: str, call_id: object, **kwargs: object):
    """Post the signed sample; returns the response."""
    return post_webhook(webhook_body(name, call_id=call_id, **kwargs))
