"""The fake LiveKit's SIP side (tests/fake_livekit.py): trunks, agent dispatch, and
dialing with an outcome scripted per number, as LiveKit's SIP service answers.

A dial with `wait_until_answered` blocks until the outcome: the SIP participant joins
the room as it dials (`participant_joined`, kind SIP, `sip.callStatus` dialing),
then either the dial returns (answered) or the participant leaves
(`participant_left` with USER_UNAVAILABLE / USER_REJECTED / CLIENT_INITIATED) and the
dial fails with the Twirp code LiveKit maps the SIP status to and `meta`
`{"sip_status_code", "sip_status"}` (livekit/protocol sip.go). Ringing out, or the room
deleted while it rings, fails it with no SIP status: Twirp `canceled` "sip request timed
out", as LiveKit's SIP bridge does (livekit/sip pkg/sip/outbound.go).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass

from google.protobuf import json_format
from livekit import api
from livekit.protocol import models as livekit_models
from livekit.protocol import sip as sip_models

METHODS = {
    "CreateSIPOutboundTrunk": (
        api.CreateSIPOutboundTrunkRequest,
        api.SIPOutboundTrunkInfo,
        "sip.admin",
    ),
    "CreateSIPInboundTrunk": (
        api.CreateSIPInboundTrunkRequest,
        api.SIPInboundTrunkInfo,
        "sip.admin",
    ),
    "DeleteSIPTrunk": (api.DeleteSIPTrunkRequest, api.SIPTrunkInfo, "sip.admin"),
    "ListSIPInboundTrunk": (
        api.ListSIPInboundTrunkRequest,
        api.ListSIPInboundTrunkResponse,
        "sip.admin",
    ),
    "ListSIPOutboundTrunk": (
        api.ListSIPOutboundTrunkRequest,
        api.ListSIPOutboundTrunkResponse,
        "sip.admin",
    ),
    "CreateSIPParticipant": (api.CreateSIPParticipantRequest, api.SIPParticipantInfo, "sip.call"),
    "TransferSIPParticipant": (
        api.TransferSIPParticipantRequest,
        api.TransferSIPParticipantResponse,
        "sip.call",
    ),
    "CreateDispatch": (api.CreateAgentDispatchRequest, api.AgentDispatch, "room_admin"),
    "CreateSIPDispatchRule": (
        api.CreateSIPDispatchRuleRequest,
        api.SIPDispatchRuleInfo,
        "sip.admin",
    ),
    "ListSIPDispatchRule": (
        api.ListSIPDispatchRuleRequest,
        api.ListSIPDispatchRuleResponse,
        "sip.admin",
    ),
    "DeleteSIPDispatchRule": (
        api.DeleteSIPDispatchRuleRequest,
        api.SIPDispatchRuleInfo,
        "sip.admin",
    ),
}


@dataclass(frozen=True)
class SipOutcome:
    """What dialing a number does: rings `ring_seconds`, then answers (no `sip_code`)
    or fails with `sip_code`/`sip_status`."""

    sip_code: int | None = None
    sip_status: str = ""
    ring_seconds: float = 0.0


ANSWER = SipOutcome()
BUSY = SipOutcome(486, "Busy Here")
NO_ANSWER = SipOutcome(480, "Temporarily Unavailable")
REJECT = SipOutcome(603, "Decline")
INVALID = SipOutcome(404, "Not Found")
CARRIER_ERROR = SipOutcome(503, "Service Unavailable")


def answer_after(seconds: float) -> SipOutcome:
    return SipOutcome(ring_seconds=seconds)


def _twirp(sip_code: int) -> tuple[int, str]:
    """LiveKit's SIP status → Twirp code and HTTP status (livekit/protocol sip.go)."""
    if sip_code in (486, 600, 480):
        return 429, "resource_exhausted"
    if sip_code in (408, 504):
        return 408, "deadline_exceeded"
    if sip_code == 487:
        return 409, "aborted"
    if sip_code in (401, 402, 403, 603, 607, 608):
        return 403, "permission_denied"
    if sip_code in (404, 604):
        return 404, "not_found"
    return 412, "failed_precondition"


def _disconnect_reason(sip_code: int) -> int:
    """The reason a failed dial's SIP participant leaves with, as LiveKit delivers it:
    its SIP bridge closes the room with the failed call's status (livekit/sip
    pkg/sip/errors.go classifyInviteError, participant.go DisconnectReason: 404, 408,
    480 unavailable, 5xx dropped, any other rejected), and LiveKit keeps only the
    unavailable and rejected reasons a client leaves with; any other is its own
    CLIENT_INITIATED (livekit/livekit pkg/rtc/signalling/signalhandler.go)."""
    reasons = livekit_models.DisconnectReason
    if sip_code in (404, 408, 480):
        return reasons.USER_UNAVAILABLE
    if 500 <= sip_code < 600:
        return reasons.CLIENT_INITIATED
    return reasons.USER_REJECTED


_ids = itertools.count(1)


class SipMixin:
    """FakeLiveKit's SIP, dispatch and webhook methods (its fields hold the state)."""

    def webhooks_send(self, event: str, room: str, participant: api.ParticipantInfo) -> None:
        """Sign and hand a webhook to `webhook_sink(body, authorization)`, as LiveKit
        posts it."""
        if self.webhook_sink is None:
            return
        message = api.WebhookEvent(
            id=f"EV_fake{next(_ids)}",
            event=event,
            room=api.Room(name=room),
            participant=participant,
            created_at=int(time.time()),
        )
        self.webhook_sign_and_send(json_format.MessageToJson(message))

    def webhook_sign_and_send(self, body: str) -> None:
        """Hand `body` to `webhook_sink` with the Authorization LiveKit would sign it with."""
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        token = api.AccessToken(self.api_key, self.api_secret).with_sha256(digest).to_jwt()
        self.webhook_sink(body, token)

    def _CreateSIPOutboundTrunk(self, message, response_class):
        return self._trunk_create(message.trunk, "outbound", response_class)

    def _CreateSIPInboundTrunk(self, message, response_class):
        return self._trunk_create(message.trunk, "inbound", response_class)

    def _trunk_create(self, trunk, direction: str, response_class):
        """As LiveKit: two inbound trunks answering the same number (neither restricted
        by `allowed_numbers`) conflict, and the second is refused (livekit/livekit
        service/sip.go CreateSIPInboundTrunk → protocol sip.ValidateTrunksIter)."""
        trunk_id = f"ST_fake{next(_ids)}"
        info = response_class()
        info.CopyFrom(trunk)
        info.sip_trunk_id = trunk_id
        info.auth_password = ""  # LiveKit does not echo secrets either
        with self._lock:
            if direction == "inbound" and not trunk.allowed_numbers:
                for other_id, kind in self.trunks.items():
                    other = self.trunk_infos.get(other_id)
                    if kind == "inbound" and other is not None and not other.allowed_numbers:
                        if set(other.numbers) & set(trunk.numbers):
                            message = "Conflicting inbound SIP Trunks"
                            body = _json_error("invalid_argument", message)
                            return 400, "application/json", body
            self.trunks[trunk_id] = direction
            self.trunk_infos[trunk_id] = info
        return info

    def _ListSIPInboundTrunk(self, message, response_class):
        return self._trunks_list("inbound", response_class)

    def _ListSIPOutboundTrunk(self, message, response_class):
        return self._trunks_list("outbound", response_class)

    def _trunks_list(self, direction: str, response_class):
        with self._lock:
            items = [
                self.trunk_infos[trunk_id]
                for trunk_id, kind in self.trunks.items()
                if kind == direction and trunk_id in self.trunk_infos
            ]
        return response_class(items=items)

    def _DeleteSIPTrunk(self, message, response_class):
        with self._lock:
            self.trunk_infos.pop(message.sip_trunk_id, None)
            if self.trunks.pop(message.sip_trunk_id, None) is None:
                return None
        return response_class(sip_trunk_id=message.sip_trunk_id)

    def _CreateSIPDispatchRule(self, message, response_class):
        """As LiveKit: the rule's trunks must exist, and two rules must not claim the
        same number on the same trunk."""
        info = response_class()
        info.CopyFrom(message.dispatch_rule)
        with self._lock:
            if any(trunk_id not in self.trunks for trunk_id in info.trunk_ids):
                return 400, "application/json", _json_error("invalid_argument", "no such trunk")
            for other in self.dispatch_rules.values():
                if set(other.trunk_ids) & set(info.trunk_ids) and (
                    set(other.numbers) & set(info.numbers)
                ):
                    return 400, "application/json", _json_error("invalid_argument", "conflict")
            info.sip_dispatch_rule_id = f"SDR_fake{next(_ids)}"
            self.dispatch_rules[info.sip_dispatch_rule_id] = info
        return info

    def _ListSIPDispatchRule(self, message, response_class):
        with self._lock:
            return response_class(items=list(self.dispatch_rules.values()))

    def _DeleteSIPDispatchRule(self, message, response_class):
        with self._lock:
            return self.dispatch_rules.pop(message.sip_dispatch_rule_id, None)

    def inbound_call(self, *, to: str, caller: str) -> tuple[str, str] | None:
        """A caller dials `to`: as LiveKit's SIP service, find the dispatch rule for the
        number (none: the call is rejected, None), create the caller's room
        (`<room_prefix>_<caller>_<random>`, an individual rule), dispatch the rule's agents
        into it, and send `participant_joined` for the caller's SIP participant. The room
        and the participant's identity."""
        with self._lock:
            rule = next((r for r in self.dispatch_rules.values() if to in r.numbers), None)
            if rule is None:
                return None
            prefix = rule.rule.dispatch_rule_individual.room_prefix
            room = f"{prefix}_{caller}_{secrets.token_hex(6)}"
            identity = f"sip_{caller}"
            self.rooms[room] = [identity]
            for agent in rule.room_config.agents:
                self.agent_dispatches.append((room, agent.agent_name, agent.metadata))
        participant = api.ParticipantInfo(
            identity=identity,
            kind=api.ParticipantInfo.Kind.SIP,
            # It joins ringing: LiveKit's SIP bridge answers the caller only once the
            # agent subscribed to them (livekit/sip pkg/sip/inbound.go), an attribute
            # change no webhook tells of.
            attributes={
                "sip.callStatus": "ringing",
                "sip.callID": f"SCL_fake{next(_ids)}",
                "sip.phoneNumber": caller,
                "sip.trunkPhoneNumber": to,
                "sip.trunkID": rule.trunk_ids[0] if rule.trunk_ids else "",
            },
        )
        self.webhooks_send("participant_joined", room, participant)
        return room, identity

    def _TransferSIPParticipant(self, message, response_class):
        """A cold transfer (SIP REFER) with the outcome scripted for its destination
        (`transfer_outcomes`, by `transfer_to`): answered, the caller's SIP participant
        leaves the room (`participant_left`); refused, it stays and the request fails as
        LiveKit's does, with the SIP status and transfer reason in `meta`.

        A transfer that went through is answered as `transfer_answer` says: "empty" as
        every released server does (livekit/livekit pkg/service/sip.go returned
        google.protobuf.Empty until 788d4c3, in no release; the SIP bridge, livekit/sip
        pkg/sip/service.go at be5d3f5, still returns Empty, so even that server's
        status reads STS_TRANSFER_ONGOING), "reported" with STS_TRANSFER_SUCCESSFUL,
        "failed" with STS_TRANSFER_FAILED and no error (the caller then stays)."""
        room, identity = message.room_name, message.participant_identity
        outcome = self.transfer_outcomes.get(message.transfer_to, ANSWER)
        if self.transfer_answer == "failed":
            return response_class(
                transfer_id=f"STR_fake{next(_ids)}",
                status=api.SIPTransferStatus.STS_TRANSFER_FAILED,
                reason=sip_models.SIPTransferReason.STR_REJECTED,
            )
        ring_limit = message.ringing_timeout.seconds or 30
        if outcome.ring_seconds:
            time.sleep(min(outcome.ring_seconds, ring_limit))
        if outcome.sip_code is None and outcome.ring_seconds > ring_limit:
            # Rung out: LiveKit's wait for its SIP bridge, as long as the ringing, runs
            # out first (livekit/livekit pkg/service/sip.go; psrpc ErrRequestTimedOut).
            return 504, "application/json", _json_error("deadline_exceeded", "request timed out")
        with self._lock:
            if identity not in self.rooms.get(room, []):
                return None  # gone meanwhile (the room deleted, the caller hung up)
            if outcome.sip_code is None:
                self.rooms[room].remove(identity)
        if outcome.sip_code is not None:
            status, code = _twirp(outcome.sip_code)
            meta = {
                "sip_status_code": str(outcome.sip_code),
                "sip_status": outcome.sip_status,
                "sip_transfer_reason": "STR_REJECTED",
            }
            return status, "application/json", _json_error(code, "transfer failed", meta)
        participant = api.ParticipantInfo(
            identity=identity,
            kind=api.ParticipantInfo.Kind.SIP,
            attributes={"sip.callStatus": "hangup"},
            disconnect_reason=livekit_models.DisconnectReason.CLIENT_INITIATED,
        )
        self.webhooks_send("participant_left", room, participant)
        if self.transfer_answer == "empty":
            return response_class()
        return response_class(
            transfer_id=f"STR_fake{next(_ids)}",
            status=api.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
        )

    def _CreateDispatch(self, message, response_class):
        with self._lock:
            self.rooms.setdefault(message.room, [])
        return response_class(
            id=f"AD_fake{next(_ids)}",
            agent_name=message.agent_name,
            room=message.room,
            metadata=message.metadata,
        )

    def _CreateSIPParticipant(self, message, response_class):
        if message.sip_trunk_id not in self.trunks:
            return 404, "application/json", _json_error("not_found", "no such trunk")
        outcome = self.sip_outcomes.get(message.sip_call_to, ANSWER)
        room, identity = message.room_name, message.participant_identity
        cancel = threading.Event()
        # It joins before the INVITE goes out, dialing (livekit/sip pkg/sip/outbound.go
        # connectToRoom); ringing and active are attribute changes no webhook tells of.
        attributes = {
            "sip.callStatus": "dialing",
            "sip.phoneNumber": message.sip_call_to,
            "sip.trunkID": message.sip_trunk_id,
        }
        participant = api.ParticipantInfo(
            identity=identity, kind=api.ParticipantInfo.Kind.SIP, attributes=attributes
        )
        with self._lock:
            self.rooms.setdefault(room, []).append(identity)
            self._cancels[room] = cancel
        self.webhooks_send("participant_joined", room, participant)
        if self.on_ringing is not None:
            self.on_ringing(room)
        ring_limit = message.ringing_timeout.seconds or 30
        sip_code, sip_status = outcome.sip_code, outcome.sip_status
        # Rung out, or cancelled by the room's deletion: LiveKit's SIP bridge stops the
        # INVITE with no SIP status of its own (livekit/sip pkg/sip/outbound.go
        # sipResponse: psrpc.Canceled, ErrSIPRequestTimeout), USER_UNAVAILABLE.
        rang_out = cancel.wait(min(outcome.ring_seconds, ring_limit)) or (
            sip_code is None and outcome.ring_seconds > ring_limit
        )
        with self._lock:
            self._cancels.pop(room, None)
        if rang_out:
            self._sip_participant_gone(
                room, participant, livekit_models.DisconnectReason.USER_UNAVAILABLE
            )
            return 408, "application/json", _json_error("canceled", "sip request timed out")
        if sip_code is None:
            return response_class(
                participant_id=f"PA_fake{next(_ids)}",
                participant_identity=identity,
                room_name=room,
                sip_call_id=f"SCL_fake{next(_ids)}",
            )
        self._sip_participant_gone(room, participant, _disconnect_reason(sip_code))
        status, code = _twirp(sip_code)
        meta = {"sip_status_code": str(sip_code), "sip_status": sip_status}
        return status, "application/json", _json_error(code, f"sip status {sip_code}", meta)

    def _sip_participant_gone(
        self, room: str, participant: api.ParticipantInfo, reason: int
    ) -> None:
        """A failed dial's SIP participant leaves the room. Its `sip.callStatus` stays
        as it was (livekit/sip pkg/sip/participant.go: a failed call's status has no
        attribute); the room, when deleted, has no one to leave."""
        with self._lock:
            if participant.identity not in self.rooms.get(room, []):
                return
            self.rooms[room].remove(participant.identity)
        participant.disconnect_reason = reason
        self.webhooks_send("participant_left", room, participant)


def _json_error(code: str, msg: str, meta: dict | None = None) -> bytes:
    return json.dumps({"code": code, "msg": msg, **({"meta": meta} if meta else {})}).encode()
