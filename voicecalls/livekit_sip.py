"""LiveKit's SIP service: trunks, dialing a phone, inbound dispatch rules and transfers
(DESIGN.md "Phone calls (LiveKit SIP)"). Requests and refusals go through
`voicecalls.livekit` like every LiveKit request."""

from __future__ import annotations

import json
import time

from django.conf import settings
from livekit import api
from livekit.protocol import sip as sip_models

from voicecalls.livekit import LiveKitError, enum_name, livekit_run, twirp_request
from voicecalls.text import storable


class SipDialError(LiveKitError):
    """LiveKit dialed and the call failed with a SIP status (busy, rejected, ...), or
    rang out (`rang_out`: nobody answered within the ringing timeout; no SIP status)."""

    def __init__(
        self,
        message: str,
        *,
        sip_status_code: int | None,
        sip_status: str | None,
        rang_out: bool = False,
    ):
        super().__init__(message)
        self.sip_status_code = sip_status_code
        self.sip_status = sip_status
        self.rang_out = rang_out


def create_outbound_trunk(
    *,
    name: str,
    address: str,
    numbers: list[str],
    auth_username: str,
    auth_password: str,
    marker: str = "",
) -> str:
    """Create an outbound SIP trunk in LiveKit (`marker` in its metadata, to find it if
    LiveKit's answer is lost); its LiveKit id."""
    trunk = api.SIPOutboundTrunkInfo(
        name=name,
        address=address,
        numbers=numbers,
        auth_username=auth_username,
        auth_password=auth_password,
        metadata=marker,
    )
    request = api.CreateSIPOutboundTrunkRequest(trunk=trunk)
    info = twirp_request("CreateSIPOutboundTrunk", lambda lk: lk.sip.create_outbound_trunk(request))
    return info.sip_trunk_id


def create_inbound_trunk(
    *, name: str, numbers: list[str], auth_username: str, auth_password: str, marker: str = ""
) -> str:
    """Create an inbound SIP trunk in LiveKit (`marker` as above); its LiveKit id."""
    trunk = api.SIPInboundTrunkInfo(
        name=name,
        numbers=numbers,
        auth_username=auth_username,
        auth_password=auth_password,
        metadata=marker,
    )
    request = api.CreateSIPInboundTrunkRequest(trunk=trunk)
    info = twirp_request("CreateSIPInboundTrunk", lambda lk: lk.sip.create_inbound_trunk(request))
    return info.sip_trunk_id


def trunks_marked_delete(*, inbound: bool, marker: str) -> int:
    """Delete the trunks LiveKit made with `marker` (a create whose answer was lost);
    how many."""
    if inbound:
        listed = twirp_request(
            "ListSIPInboundTrunk",
            lambda lk: lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest()),
        )
    else:
        listed = twirp_request(
            "ListSIPOutboundTrunk",
            lambda lk: lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest()),
        )
    marked = [trunk.sip_trunk_id for trunk in listed.items if marker and trunk.metadata == marker]
    for trunk_id in marked:
        delete_trunk(trunk_id=trunk_id)
    return len(marked)


def delete_trunk(*, trunk_id: str) -> bool:
    """Delete a SIP trunk; True if it existed, False if LiveKit no longer has it."""
    request = api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id)
    deleted = twirp_request(
        "DeleteSIPTrunk", lambda lk: lk.sip.delete_trunk(request), if_not_found=None
    )
    return deleted is not None


# Beyond the ringing: LiveKit answers a dial a little after its ringing timeout.
DIAL_TIMEOUT_MARGIN_SECONDS = 5.0
# LiveKit waits this long at most for a dial's answer (livekit/livekit
# pkg/service/sip.go CreateSIPParticipant, wait_until_answered), then gives it up.
LIVEKIT_DIAL_WAIT_SECONDS = 80
# How LiveKit answers a dial nobody answered: its SIP bridge gives up the INVITE when
# the ringing timeout (or LiveKit's wait) passes, with no SIP status: Twirp `canceled`
# "sip request timed out" (livekit/sip pkg/sip/outbound.go sipResponse), or
# `deadline_exceeded` when LiveKit's own wait ran out first.
_RANG_OUT_CODES = frozenset({api.TwirpErrorCode.CANCELED, api.TwirpErrorCode.DEADLINE_EXCEEDED})


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
    `SipDialError` with the SIP status (or `rang_out`), `LiveKitError` when LiveKit
    failed otherwise."""
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
    started = time.monotonic()
    try:
        livekit_run(
            lambda lk: lk.sip.create_sip_participant(request, timeout=timeout), timeout=timeout
        )
    except api.SipCallError as exc:
        # The carrier's reason phrase, kept on the call: as text PostgreSQL can store.
        status = storable(exc.sip_status) if exc.sip_status else exc.sip_status
        raise SipDialError(
            f"SIP call failed: {exc.sip_status_code} {status}",
            sip_status_code=exc.sip_status_code,
            sip_status=status,
        ) from None
    except api.TwirpError as exc:
        if _rang_out(exc, started=started, ringing=ringing_timeout_seconds):
            raise SipDialError(
                "SIP call rang out", sip_status_code=None, sip_status=None, rang_out=True
            ) from None
        raise LiveKitError(f"LiveKit refused CreateSIPParticipant: {exc.code}") from None


def _rang_out(exc: api.TwirpError, *, started: float, ringing: int) -> bool:
    """LiveKit gave up a dial or a transfer with no SIP status once it had rung all it
    could (`started`: time.monotonic() before asking): nobody answered. (Sooner, the
    same codes are LiveKit failing: its SIP node going away.)"""
    rang = min(ringing, LIVEKIT_DIAL_WAIT_SECONDS)
    return exc.code in _RANG_OUT_CODES and time.monotonic() - started >= rang


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
    info = twirp_request("CreateSIPDispatchRule", lambda lk: lk.sip.create_dispatch_rule(request))
    return info.sip_dispatch_rule_id


def dispatch_rule_find(*, trunk_id: str, number: str, phone_number_id: str) -> str | None:
    """The id of the dispatch rule `create_dispatch_rule` made for this number, if
    LiveKit has one (a create whose answer was lost): None otherwise."""
    request = api.ListSIPDispatchRuleRequest(trunk_ids=[trunk_id])
    listed = twirp_request("ListSIPDispatchRule", lambda lk: lk.sip.list_dispatch_rule(request))
    for rule in listed.items:
        if trunk_id not in rule.trunk_ids or number not in rule.numbers:
            continue
        for agent in rule.room_config.agents:
            try:
                metadata = json.loads(agent.metadata or "{}")
            except ValueError:
                continue
            if isinstance(metadata, dict) and metadata.get("phone_number_id") == phone_number_id:
                return rule.sip_dispatch_rule_id
    return None


def delete_dispatch_rule(*, rule_id: str) -> bool:
    """Delete a SIP dispatch rule; True if it existed, False if LiveKit no longer has it."""
    request = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id)
    deleted = twirp_request(
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
    cold transfer (SIP REFER), waiting for its outcome: returns once LiveKit answers
    without an error; `SipTransferError` when it was tried and failed (refused, or
    nobody answered), `LiveKitError` when LiveKit failed otherwise.

    LiveKit answers only once the transfer is over, and a failure as an error. Released
    servers answer a success with an empty message (google.protobuf.Empty), whose
    status reads STS_TRANSFER_ONGOING, as does the newest's, which copies the SIP
    bridge's answer (Empty too): only a status saying it failed is a failure."""
    request = api.TransferSIPParticipantRequest(
        room_name=room_name, participant_identity=identity, transfer_to=transfer_to
    )
    request.ringing_timeout.seconds = ringing_timeout_seconds
    timeout = ringing_timeout_seconds + DIAL_TIMEOUT_MARGIN_SECONDS
    started = time.monotonic()
    try:
        response = livekit_run(
            lambda lk: lk.sip.transfer_sip_participant(request, timeout=timeout), timeout=timeout
        )
    except api.SipCallError as exc:
        raise SipTransferError(
            f"SIP transfer failed: {exc.sip_status_code or exc.sip_transfer_reason or exc.code}",
            sip_status_code=exc.sip_status_code,
        ) from None
    except api.TwirpError as exc:
        # Rung out: LiveKit's wait for it, as long as the ringing, ran out first.
        if _rang_out(exc, started=started, ringing=ringing_timeout_seconds):
            raise SipTransferError("SIP transfer rang out", sip_status_code=None) from None
        raise LiveKitError(f"LiveKit refused TransferSIPParticipant: {exc.code}") from None
    if response.status == sip_models.SIPTransferStatus.STS_TRANSFER_FAILED:
        reason = enum_name(sip_models.SIPTransferReason, response.reason)
        raise SipTransferError(f"SIP transfer did not complete: {reason}", sip_status_code=None)
