"""The one module that talks to LiveKit: tokens, webhook verification, RoomService,
agent dispatch and SIP (trunks, dialing).

Minting a token and verifying a webhook are local: they need the API key and secret,
not the server. RoomService calls go over HTTP (Twirp) with a timeout; livekit-api is
async (aiohttp), so each call runs its own short event loop. Every failure surfaces
as `LiveKitError`; a room LiveKit does not know is not a failure.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import datetime
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
import jwt
from django.conf import settings
from google.protobuf import json_format
from livekit import api
from livekit.protocol import egress as livekit_egress
from livekit.protocol import models as livekit_models
from livekit.protocol import webhook as livekit_webhook

from voicecalls.text import storable

T = TypeVar("T")


class LiveKitError(Exception):
    """LiveKit could not be reached or answered with an error. `summary`: the same
    without the connection's details (LiveKit's address), for what customers read."""

    def __init__(self, message: str, *, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message


class WebhookSignatureError(Exception):
    """A webhook without a valid signature by our API key and secret."""


class WebhookPayloadError(Exception):
    """A correctly signed webhook whose body is not an event we can store."""


# LiveKit's event ids are short ("EV_" and a dozen characters); stored ids are bounded.
WEBHOOK_EVENT_ID_MAX = 100


@dataclass(frozen=True)
class EgressUpdate:
    """What an egress webhook (`egress_started`/`_updated`/`_ended`) says of a recording."""

    egress_id: str
    # An `EgressStatus` name, e.g. "EGRESS_COMPLETE" ("UNKNOWN" for a newer server's).
    status: str
    # LiveKit's `error`, else its `details` (where newer servers say why an egress ended).
    error: str
    # Of the first file written (a room composite to one file writes one), if any.
    duration_ns: int | None = None
    size_bytes: int | None = None
    # Where it writes its file: a recording's `object_key` ("" if it does not say, or
    # writes none): an egress is a recording's only if it writes the recording's key.
    filepath: str = ""


@dataclass(frozen=True)
class WebhookEvent:
    """The parts of a LiveKit webhook event the call lifecycle reads."""

    id: str
    event: str
    room_name: str
    participant_identity: str
    participant_kind: str
    # A `DisconnectReason` name, e.g. "CLIENT_INITIATED" ("UNKNOWN_REASON" when absent).
    disconnect_reason: str
    created_at: int
    # The participant's attributes; a SIP participant's carry `sip.callStatus`
    # (dialing, ringing, active, hangup) and `sip.phoneNumber`.
    participant_attributes: dict[str, str] = field(default_factory=dict)
    egress: EgressUpdate | None = None


def _webhook_verifier(token: str) -> api.TokenVerifier:
    """The verifier of the key the token names as its issuer: LIVEKIT_API_KEY, or one of
    LIVEKIT_API_KEY_FALLBACKS during a rotation. The issuer only picks the secret; the
    signature is then checked by it, and the issuer again."""
    keys = {**settings.LIVEKIT_API_KEY_FALLBACKS}
    keys[settings.LIVEKIT_API_KEY] = settings.LIVEKIT_API_SECRET
    try:
        issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except (jwt.PyJWTError, AttributeError):  # not a JWT, or its claims not an object
        issuer = None
    key = issuer if isinstance(issuer, str) and issuer in keys else settings.LIVEKIT_API_KEY
    return api.TokenVerifier(key, keys[key])


def _webhook_token(authorization: str) -> str:
    """The JWT of an `Authorization` header (bare, as LiveKit sends it, or `Bearer`)."""
    token = authorization.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise WebhookSignatureError("Missing signature.")
    return token


def _webhook_signature_verify(*, body: bytes, authorization: str) -> None:
    """`WebhookReceiver`'s check, on the exact bytes (it takes text only, and a body
    that is no UTF-8 text must still be a 401 unsigned): the JWT by livekit-api's
    verifier, then the body's hash it signs. Raises `WebhookSignatureError`."""
    token = _webhook_token(authorization)
    try:
        claims = _webhook_verifier(token).verify(token)
        if base64.b64decode(claims.sha256 or "") != hashlib.sha256(body).digest():
            raise ValueError("hash mismatch")
    except Exception as exc:  # jwt errors, no sha256 claim or another
        raise WebhookSignatureError(str(exc) or exc.__class__.__name__) from exc


def webhook_event_verify(*, body: bytes, authorization: str) -> WebhookEvent:
    """Verify a webhook's JWT (HS256 by our secret, issuer our key, sha256 of the body).

    Raises `WebhookSignatureError` for unsigned, tampered or foreign events, and
    `WebhookPayloadError` for a signed body that is no event we can store (not UTF-8,
    not a WebhookEvent, or text PostgreSQL cannot hold).
    """
    _webhook_signature_verify(body=body, authorization=authorization)
    # Parsed only once the signature and the body's hash matched.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookPayloadError("The body is not UTF-8.") from exc
    try:
        event = json_format.Parse(text, livekit_webhook.WebhookEvent(), ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError) as exc:
        raise WebhookPayloadError("The body is not a LiveKit webhook event.") from exc
    participant = event.participant
    egress = _egress_update(event)
    # Egress events name their room in `egress_info` only.
    room_name = event.room.name or (event.egress_info.room_name if egress else "")
    texts = "".join((event.id, event.event, room_name, participant.identity))
    if egress is not None:
        texts += egress.egress_id + egress.error + egress.filepath
    if not _storable(texts) or len(event.id) > WEBHOOK_EVENT_ID_MAX:
        raise WebhookPayloadError("The event's id, room or participant cannot be stored.")
    return WebhookEvent(
        id=event.id,
        event=event.event,
        room_name=room_name,
        participant_identity=participant.identity,
        participant_kind=enum_name(livekit_models.ParticipantInfo.Kind, participant.kind),
        disconnect_reason=enum_name(livekit_models.DisconnectReason, participant.disconnect_reason),
        created_at=event.created_at,
        participant_attributes=_attributes_storable(participant.attributes),
        egress=egress,
    )


def _attributes_storable(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attributes as PostgreSQL can store them: a U+0000 (a carrier's in its caller
    id) removed, as the agent's request has it; one still unstorable (a lone surrogate)
    left out. Refused, the webhook would be a 500 LiveKit retries."""
    kept = {}
    for key, value in attributes.items():
        key, value = key.replace("\x00", ""), value.replace("\x00", "")
        if _storable(key + value):
            kept[key] = value
    return kept


def _egress_update(event: object) -> EgressUpdate | None:
    if not event.HasField("egress_info"):  # type: ignore[attr-defined]
        return None
    return egress_update_of(event.egress_info)  # type: ignore[attr-defined]


def egress_update_of(info: object) -> EgressUpdate:
    """What an `EgressInfo` (a webhook's, or ListEgress's) says of a recording."""
    files = list(info.file_results) or ([info.file] if info.HasField("file") else [])
    first = files[0] if files else None
    return EgressUpdate(
        egress_id=info.egress_id,
        status=enum_name(livekit_egress.EgressStatus, info.status),
        # It may quote what the storage answered: kept, as text PostgreSQL can store
        # (protobuf has checked it is UTF-8).
        error=storable(info.error or info.details),
        duration_ns=first.duration if first is not None else None,
        size_bytes=first.size if first is not None else None,
        filepath=_filepath_of(info, files),
    )


def _filepath_of(info: object, files: list) -> str:
    """Where an egress writes its file: as its request names it (a room composite's, as
    ours are, or the newer StartEgress's), else its file; "" for one that writes none
    (a stream) or lets LiveKit name it."""
    request = info.room_composite  # type: ignore[attr-defined]
    paths = [output.filepath for output in request.file_outputs]
    paths.append(request.file.filepath)
    paths += [output.file.filepath for output in info.egress.outputs]  # type: ignore[attr-defined]
    paths += [file.filename for file in files]
    return next((path for path in paths if path), "")


def enum_name(enum: object, value: int) -> str:
    """The name of a protobuf enum value; a value this SDK does not know (a newer
    server's, or a signed body's -1) is "UNKNOWN" rather than an error."""
    try:
        return enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return "UNKNOWN"


def _storable(text: str) -> bool:
    """Text PostgreSQL can store: no U+0000, no lone surrogates (JSON lets both in)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def webhook_authorization(body: str) -> str:
    """The `Authorization` value LiveKit would send with `body` (for simulations and tests)."""
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_sha256(digest)
        .to_jwt()
    )


def livekit_run(
    call: Callable[[api.LiveKitAPI], Awaitable[T]], *, timeout: float | None = None
) -> T:
    """Run one LiveKit API request, bounded by `timeout` seconds (default
    LIVEKIT_API_TIMEOUT_SECONDS; dialing a phone waits for the ringing)."""
    limit = timeout or settings.LIVEKIT_API_TIMEOUT_SECONDS

    async def main() -> T:
        timeout = aiohttp.ClientTimeout(total=limit)
        client = api.LiveKitAPI(
            settings.LIVEKIT_URL,
            settings.LIVEKIT_API_KEY,
            settings.LIVEKIT_API_SECRET,
            timeout=timeout,
            failover=False,
        )
        try:
            # livekit-api passes `timeout=None` per request, which aiohttp reads as "no
            # timeout" and so overrides the session's: bound the whole call here.
            return await asyncio.wait_for(call(client), limit)
        finally:
            await client.aclose()

    try:
        return _run_coroutine(main())
    except api.TwirpError:
        raise
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise LiveKitError(
            f"LiveKit unreachable: {exc.__class__.__name__}: {exc}", summary="LiveKit unreachable"
        ) from exc


def _run_coroutine(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already
    runs an event loop (an ASGI server, or a test driving Playwright): then it runs
    on a short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _is_not_found(exc: api.TwirpError) -> bool:
    return exc.code == api.TwirpErrorCode.NOT_FOUND


_RAISE = object()


def twirp_request(
    method: str,
    call: Callable[[api.LiveKitAPI], Awaitable[T]],
    *,
    if_not_found: object = _RAISE,
    timeout: float | None = None,
) -> T:
    """One Twirp request; LiveKit refusing it is a LiveKitError naming `method` and the
    Twirp code only (a refusal's message may echo the request, e.g. a trunk password),
    or `if_not_found` when given and the code is NOT_FOUND."""
    try:
        return livekit_run(call, timeout=timeout)
    except api.TwirpError as exc:
        if if_not_found is not _RAISE and _is_not_found(exc):
            return if_not_found  # type: ignore[return-value]
        raise LiveKitError(f"LiveKit refused {method}: {exc.code}") from None


def room_delete(*, room_name: str) -> bool:
    """Delete a room (disconnecting everyone); True if it existed, False if already gone."""
    request = api.DeleteRoomRequest(room=room_name)
    deleted = twirp_request(
        "DeleteRoom", lambda lk: lk.room.delete_room(request), if_not_found=None
    )
    return deleted is not None


def rooms_existing(*, room_names: list[str]) -> set[str]:
    """Which of these rooms LiveKit currently has (one ListRooms request)."""
    if not room_names:
        return set()
    request = api.ListRoomsRequest(names=room_names)
    response = twirp_request("ListRooms", lambda lk: lk.room.list_rooms(request))
    return {room.name for room in response.rooms}


def room_participant_identities(*, room_name: str) -> set[str] | None:
    """Identities in a room now, or None when LiveKit answers NOT_FOUND (servers list a
    room they do not have as empty: an empty set may mean the room is gone)."""
    request = api.ListParticipantsRequest(room=room_name)
    response = twirp_request(
        "ListParticipants", lambda lk: lk.room.list_participants(request), if_not_found=None
    )
    if response is None:
        return None
    return {participant.identity for participant in response.participants}


def room_has_agent(*, room_name: str) -> bool:
    """Whether an agent participant is in the room now (kind AGENT, or named as LiveKit
    names a dispatched agent's, `agent-<job id>`); False for a room LiveKit does not
    have."""
    request = api.ListParticipantsRequest(room=room_name)
    response = twirp_request(
        "ListParticipants", lambda lk: lk.room.list_participants(request), if_not_found=None
    )
    if response is None:
        return False
    agent = livekit_models.ParticipantInfo.Kind.AGENT
    return any(p.kind == agent or p.identity.startswith("agent-") for p in response.participants)


def _access_token(*, identity: str, grants: api.VideoGrants, ttl_seconds: int) -> api.AccessToken:
    return (
        api.AccessToken(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(datetime.timedelta(seconds=ttl_seconds))
    )


def participant_token(*, room_name: str, identity: str, name: str | None, call_id: str) -> str:
    """A JWT for the end user: join exactly `room_name`; dispatch our agent on join.

    The client can read the token, so it carries only the call id for the agent,
    never user data or secrets.
    """
    room_config = api.RoomConfiguration(
        departure_timeout=settings.LIVEKIT_DEPARTURE_TIMEOUT,
        agents=[
            api.RoomAgentDispatch(
                agent_name=settings.LIVEKIT_AGENT_NAME,
                metadata=json.dumps({"call_id": call_id}),
            )
        ],
    )
    grants = api.VideoGrants(
        room_join=True, room=room_name, can_publish=True, can_subscribe=True, can_publish_data=True
    )
    token = _access_token(
        identity=identity, grants=grants, ttl_seconds=settings.LIVEKIT_TOKEN_TTL_SECONDS
    ).with_room_config(room_config)
    if name:
        token = token.with_name(name)
    return token.to_jwt()


def monitor_token(*, room_name: str, identity: str) -> str:
    """A listen-only JWT for a phone call's room: hidden, subscribe-only, no room
    configuration (joining dispatches nothing), valid at most 15 minutes."""
    grants = api.VideoGrants(
        room_join=True,
        room=room_name,
        can_publish=False,
        can_subscribe=True,
        can_publish_data=False,
        hidden=True,
    )
    ttl = min(settings.LIVEKIT_TOKEN_TTL_SECONDS, 900)
    return _access_token(identity=identity, grants=grants, ttl_seconds=ttl).to_jwt()


def agent_dispatch(*, room_name: str, call_id: str) -> None:
    """Dispatch our agent into a room (LiveKit creates the room if needed)."""
    request = api.CreateAgentDispatchRequest(
        agent_name=settings.LIVEKIT_AGENT_NAME,
        room=room_name,
        metadata=json.dumps({"call_id": call_id}),
    )
    twirp_request("CreateAgentDispatch", lambda lk: lk.agent_dispatch.create_dispatch(request))
