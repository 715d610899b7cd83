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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from django.conf import settings
from google.protobuf import json_format
from livekit import api
from livekit.protocol import models as livekit_models
from livekit.protocol import sip as sip_models

T = TypeVar("T")


class LiveKitError(Exception):
    """LiveKit could not be reached or answered with an error."""


class SipDialError(LiveKitError):
    """LiveKit dialed and the call failed with a SIP status (busy, rejected, ...)."""

    def __init__(self, message: str, *, sip_status_code: int | None, sip_status: str | None):
        super().__init__(message)
        self.sip_status_code = sip_status_code
        self.sip_status = sip_status


class WebhookSignatureError(Exception):
    """A webhook without a valid signature by our API key and secret."""


class WebhookPayloadError(Exception):
    """A correctly signed webhook whose body is not an event we can store."""


# LiveKit's event ids are short ("EV_" and a dozen characters); stored ids are bounded.
WEBHOOK_EVENT_ID_MAX = 100


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


def webhook_event_verify(*, body: str, authorization: str) -> WebhookEvent:
    """Verify a webhook's JWT (HS256 by our secret, issuer our key, sha256 of the body).

    Raises `WebhookSignatureError` for unsigned, tampered or foreign events, and
    `WebhookPayloadError` for a signed body that is no event we can store (not a
    WebhookEvent, or text PostgreSQL cannot hold).
    """
    token = authorization.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise WebhookSignatureError("Missing signature.")
    receiver = api.WebhookReceiver(
        api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
    )
    try:
        event = receiver.receive(body, token)
    except (json_format.ParseError, RecursionError) as exc:
        # Parsed only once the signature and the body's hash matched.
        raise WebhookPayloadError("The body is not a LiveKit webhook event.") from exc
    except Exception as exc:  # jwt errors, hash mismatch
        raise WebhookSignatureError(str(exc) or exc.__class__.__name__) from exc
    participant = event.participant
    texts = "".join((event.id, event.event, event.room.name, participant.identity))
    if not _storable(texts) or len(event.id) > WEBHOOK_EVENT_ID_MAX:
        raise WebhookPayloadError("The event's id, room or participant cannot be stored.")
    return WebhookEvent(
        id=event.id,
        event=event.event,
        room_name=event.room.name,
        participant_identity=participant.identity,
        participant_kind=_enum_name(livekit_models.ParticipantInfo.Kind, participant.kind),
        disconnect_reason=_enum_name(
            livekit_models.DisconnectReason, participant.disconnect_reason
        ),
        created_at=event.created_at,
        participant_attributes=dict(participant.attributes),
    )


def _enum_name(enum: object, value: int) -> str:
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


def _run(call: Callable[[api.LiveKitAPI], Awaitable[T]], *, timeout: float | None = None) -> T:
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
        raise LiveKitError(f"LiveKit unreachable: {exc.__class__.__name__}: {exc}") from exc


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


def _request(
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
        return _run(call, timeout=timeout)
    except api.TwirpError as exc:
        if if_not_found is not _RAISE and _is_not_found(exc):
            return if_not_found  # type: ignore[return-value]
        raise LiveKitError(f"LiveKit refused {method}: {exc.code}") from None


def room_delete(*, room_name: str) -> bool:
    """Delete a room (disconnecting everyone); True if it existed, False if already gone."""
    request = api.DeleteRoomRequest(room=room_name)
    deleted = _request("DeleteRoom", lambda lk: lk.room.delete_room(request), if_not_found=None)
    return deleted is not None


def rooms_existing(*, room_names: list[str]) -> set[str]:
    """Which of these rooms LiveKit currently has (one ListRooms request)."""
    if not room_names:
        return set()
    request = api.ListRoomsRequest(names=room_names)
    response = _request("ListRooms", lambda lk: lk.room.list_rooms(request))
    return {room.name for room in response.rooms}


def room_participant_identities(*, room_name: str) -> set[str] | None:
    """Identities in a room now, or None when LiveKit does not know the room."""
    request = api.ListParticipantsRequest(room=room_name)
    response = _request(
        "ListParticipants", lambda lk: lk.room.list_participants(request), if_not_found=None
    )
    if response is None:
        return None
    return {participant.identity for participant in response.participants}


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


def create_outbound_trunk(
    *, name: str, address: str, numbers: list[str], auth_username: str, auth_password: str
) -> str:
    """Create an outbound SIP trunk in LiveKit; its LiveKit id."""
    trunk = api.SIPOutboundTrunkInfo(
        name=name,
        address=address,
        numbers=numbers,
        auth_username=auth_username,
        auth_password=auth_password,
    )
    request = api.CreateSIPOutboundTrunkRequest(trunk=trunk)
    info = _request("CreateSIPOutboundTrunk", lambda lk: lk.sip.create_outbound_trunk(request))
    return info.sip_trunk_id


def create_inbound_trunk(
    *, name: str, numbers: list[str], auth_username: str, auth_password: str
) -> str:
    """Create an inbound SIP trunk in LiveKit; its LiveKit id."""
    trunk = api.SIPInboundTrunkInfo(
        name=name, numbers=numbers, auth_username=auth_username, auth_password=auth_password
    )
    request = api.CreateSIPInboundTrunkRequest(trunk=trunk)
    info = _request("CreateSIPInboundTrunk", lambda lk: lk.sip.create_inbound_trunk(request))
    return info.sip_trunk_id


def delete_trunk(*, trunk_id: str) -> bool:
    """Delete a SIP trunk; True if it existed, False if LiveKit no longer has it."""
    request = api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id)
    deleted = _request("DeleteSIPTrunk", lambda lk: lk.sip.delete_trunk(request), if_not_found=None)
    return deleted is not None


def agent_dispatch(*, room_name: str, call_id: str) -> None:
    """Dispatch our agent into a room (LiveKit creates the room if needed)."""
    request = api.CreateAgentDispatchRequest(
        agent_name=settings.LIVEKIT_AGENT_NAME,
        room=room_name,
        metadata=json.dumps({"call_id": call_id}),
    )
    _request("CreateAgentDispatch", lambda lk: lk.agent_dispatch.create_dispatch(request))


# Beyond the ringing: LiveKit answers a dial a little after its ringing timeout.
DIAL_TIMEOUT_MARGIN_SECONDS = 5.0


def sip_dial(
    *,
    trunk_id: str,
    to_number: str,
    from_number: str,
    room_name: str,
    identity: str,
    ringing_timeout_seconds: int,
    max_call_duration_seconds: int,
) -> None:
    """Dial a phone into a room and wait until it is answered (returns) or fails:
    `SipDialError` with the SIP status, `LiveKitError` when LiveKit failed otherwise."""
    request = api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk_id,
        sip_call_to=to_number,
        sip_number=from_number,
        room_name=room_name,
        participant_identity=identity,
        wait_until_answered=True,
    )
    request.ringing_timeout.seconds = ringing_timeout_seconds
    request.max_call_duration.seconds = max_call_duration_seconds
    timeout = ringing_timeout_seconds + DIAL_TIMEOUT_MARGIN_SECONDS
    try:
        _run(lambda lk: lk.sip.create_sip_participant(request, timeout=timeout), timeout=timeout)
    except api.SipCallError as exc:
        raise SipDialError(
            f"SIP call failed: {exc.sip_status_code} {exc.sip_status}",
            sip_status_code=exc.sip_status_code,
            sip_status=exc.sip_status,
        ) from None
    except api.TwirpError as exc:
        raise LiveKitError(f"LiveKit refused CreateSIPParticipant: {exc.code}") from None


# Inbound rooms: `inbound-<random>`, one per caller (never `call-<id>`: the call is
# created when the caller arrives, and found by its stored room name).
INBOUND_ROOM_PREFIX = "inbound-"


def create_dispatch_rule(*, trunk_id: str, number: str, phone_number_id: str) -> str:
    """Create the SIP dispatch rule for calls to `number` on trunk `trunk_id`: each
    caller in a new room of its own, our agent dispatched into it with metadata naming
    the number. Its LiveKit id."""
    rule = api.SIPDispatchRuleInfo(
        rule=api.SIPDispatchRule(
            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=INBOUND_ROOM_PREFIX)
        ),
        trunk_ids=[trunk_id],
        numbers=[number],
        name=f"voicecalls {number}",
        room_config=api.RoomConfiguration(
            departure_timeout=settings.LIVEKIT_DEPARTURE_TIMEOUT,
            agents=[
                api.RoomAgentDispatch(
                    agent_name=settings.LIVEKIT_AGENT_NAME,
                    metadata=json.dumps(
                        {"phone_number": number, "phone_number_id": phone_number_id}
                    ),
                )
            ],
        ),
    )
    request = api.CreateSIPDispatchRuleRequest(dispatch_rule=rule)
    info = _request("CreateSIPDispatchRule", lambda lk: lk.sip.create_dispatch_rule(request))
    return info.sip_dispatch_rule_id


def delete_dispatch_rule(*, rule_id: str) -> bool:
    """Delete a SIP dispatch rule; True if it existed, False if LiveKit no longer has it."""
    request = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id)
    deleted = _request(
        "DeleteSIPDispatchRule", lambda lk: lk.sip.delete_dispatch_rule(request), if_not_found=None
    )
    return deleted is not None


class SipTransferError(LiveKitError):
    """The transfer was tried and did not complete (the destination refused, rang out,
    or the carrier failed): the caller is still in the room."""

    def __init__(self, message: str, *, sip_status_code: int | None) -> None:
        super().__init__(message)
        self.sip_status_code = sip_status_code


def sip_transfer(
    *, room_name: str, identity: str, transfer_to: str, ringing_timeout_seconds: int
) -> None:
    """Hand the SIP participant `identity` to `transfer_to` (`tel:+…` or `sip:…`), a
    cold transfer (SIP REFER), waiting for its outcome: returns once LiveKit reports it
    successful; `SipTransferError` when it was tried and failed, `LiveKitError` when
    LiveKit failed otherwise."""
    request = api.TransferSIPParticipantRequest(
        room_name=room_name, participant_identity=identity, transfer_to=transfer_to
    )
    request.ringing_timeout.seconds = ringing_timeout_seconds
    timeout = ringing_timeout_seconds + DIAL_TIMEOUT_MARGIN_SECONDS
    try:
        response = _run(
            lambda lk: lk.sip.transfer_sip_participant(request, timeout=timeout), timeout=timeout
        )
    except api.SipCallError as exc:
        raise SipTransferError(
            f"SIP transfer failed: {exc.sip_status_code or exc.sip_transfer_reason or exc.code}",
            sip_status_code=exc.sip_status_code,
        ) from None
    except api.TwirpError as exc:
        raise LiveKitError(f"LiveKit refused TransferSIPParticipant: {exc.code}") from None
    if response.status != sip_models.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL:
        reason = _enum_name(sip_models.SIPTransferReason, response.reason)
        raise SipTransferError(f"SIP transfer did not complete: {reason}", sip_status_code=None)
