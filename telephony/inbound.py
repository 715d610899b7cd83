"""Inbound phone calls: a caller dialed one of an organization's verified numbers,
LiveKit's dispatch rule put them in a room of their own (`inbound-…`) and dispatched
the agent. The call is created by whichever arrives first, the agent's session
request or the SIP participant's `participant_joined` webhook, exactly once per room:
the room name is unique, and the second to insert finds the first's call (DESIGN.md
"Phone calls", Inbound)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition
from calls.limits import ConcurrencyLimitReached, call_counts_lock, open_call_reserve
from calls.models import Call, CallChannel, CallDirection, CallStatus
from calls.services import call_room_close_later
from calls.sql import insert_instance
from privacy.keys import room_names_erased
from telephony.models import PhoneNumber, PhoneNumberStatus
from telephony.numbers import number_masked
from workflows.selectors import CallTarget, workflow_call_target

logger = logging.getLogger(__name__)

ROOM_NAME_MAX = Call._meta.get_field("room_name").max_length
# An inbound call refused for the concurrency limit: for this long its session is still
# given to the agent, which says the busy message and hangs up; then the room is closed
# in any case, so a caller is never left in silence when no agent came.
BUSY_ANSWER_SECONDS = 60
FROM_NUMBER_MAX = Call._meta.get_field("from_number").max_length
# A caller id (`sip.phoneNumber`) is kept as the call's user_id; a longer one is no
# number anyone could call back, and the call is answered as from an unknown caller.
CALLER_MAX = 64
_CALLER_MAX_LENGTHS = {
    "room_name": ROOM_NAME_MAX,
    "participant_identity": Call._meta.get_field("participant_identity").max_length,
}


@dataclass(frozen=True)
class InboundCaller:
    """Who is in the room: the SIP participant LiveKit made for the caller
    (attributes `sip.phoneNumber`, `sip.trunkPhoneNumber`, `sip.trunkID`)."""

    room_name: str
    participant_identity: str
    caller: str
    called: str
    livekit_trunk_id: str = ""

    def too_long(self) -> str | None:
        """What of it the call cannot store (the agent's session request refuses the
        same), or None: a 500 on PostgreSQL, else."""
        for name, limit in _CALLER_MAX_LENGTHS.items():
            if len(getattr(self, name)) > limit:
                return name
        return None

    @classmethod
    def from_attributes(
        cls, *, room_name: str, participant_identity: str, attributes: dict[str, str]
    ) -> InboundCaller:
        return cls(
            room_name=room_name,
            participant_identity=participant_identity,
            caller=attributes.get("sip.phoneNumber", ""),
            called=attributes.get("sip.trunkPhoneNumber", ""),
            livekit_trunk_id=attributes.get("sip.trunkID", ""),
        )


def inbound_call_open(
    *, room_name: str, participant_identity: str, attributes: dict[str, str]
) -> Call | None:
    """The webhook's way in: the room's call, created if this SIP participant called
    one of our verified numbers; None (logged) for anything else."""
    return inbound_call_get_or_create(
        caller=InboundCaller.from_attributes(
            room_name=room_name, participant_identity=participant_identity, attributes=attributes
        )
    )


def inbound_number_for(
    *, caller: InboundCaller, organization: Organization | None = None
) -> PhoneNumber | None:
    """The verified number the caller dialed, on the trunk LiveKit says the call came
    in on (when it says), of `organization` when given."""
    # A suspended organization's number answers nobody, as a number not ours (README
    # "Suspending an organization"); its rule stays in LiveKit, for the reinstatement.
    numbers = (
        PhoneNumber.objects.select_related("organization", "trunk")
        .defer("trunk__auth_password")
        .filter(
            number=caller.called,
            status=PhoneNumberStatus.VERIFIED,
            organization__suspended_at__isnull=True,
        )
    )
    if organization is not None:
        numbers = numbers.filter(organization=organization)
    number = numbers.first()
    if number is None:
        return None
    if caller.livekit_trunk_id and caller.livekit_trunk_id != number.trunk.livekit_trunk_id:
        return None
    return number


def inbound_call_get_or_create(
    *, caller: InboundCaller, organization: Organization | None = None
) -> Call | None:
    """The room's call, created on first sight: direction `inbound`, channel `phone`,
    `active` (the caller is in the room), `user_id` the caller's number, `user_data`
    `{caller, called}`, on the number's workflow as it is now. Over the organization's
    concurrency limit it is created `failed`/`concurrency_limit`. None, logged, when
    the room has no call and the caller dialed no verified number of ours (a number
    deleted while LiveKit still routed to it, or a workflow deleted since)."""
    if too_long := caller.too_long():
        logger.warning("inbound call whose %s is beyond its columns' length: ignored", too_long)
        return None
    if len(caller.caller) > CALLER_MAX:
        logger.warning("inbound caller id of %d characters: taken as none", len(caller.caller))
        caller = dataclasses.replace(caller, caller="")
    # The call may be ended and erased, its room renamed: a late webhook or agent
    # request then finds it under the erased name and opens nothing new.
    names = [caller.room_name, *room_names_erased(caller.room_name)]
    existing = Call.objects.filter(room_name__in=names).first()
    if existing is not None:
        if organization is not None and existing.organization_id != organization.pk:
            return None
        return existing
    answered = _answering_number(caller=caller, organization=organization)
    if answered is None:
        return None
    number, target = answered
    return _inbound_call_insert(call=_inbound_call(caller=caller, number=number, target=target))


def _answering_number(
    *, caller: InboundCaller, organization: Organization | None
) -> tuple[PhoneNumber, CallTarget] | None:
    """The verified number the caller dialed and its workflow's current version; None,
    logged, when there is no such number or its workflow is deleted."""
    target = None
    for _ in range(2):
        number = inbound_number_for(caller=caller, organization=organization)
        if number is None:
            # The room's name holds the caller's number (docs/privacy.md): masked here.
            logger.warning(
                "inbound call from %s to %r: no verified number of ours; not answered",
                number_masked(caller.caller),
                caller.called,
            )
            return None
        # By its id: a rename of the workflow's slug since the number was read keeps it.
        target = workflow_call_target(
            organization=number.organization, workflow_id=number.workflow_id
        )
        if target is not None:
            break
        # Deleted since the number was read: no workflow is while a number reaches it,
        # so the number was moved to another meanwhile. Read again, once.
    if target is None:
        logger.warning(
            "inbound call from %s to %s: its workflow is deleted; not answered",
            number_masked(caller.caller),
            number.number,
        )
        return None
    return number, target


def _inbound_call(*, caller: InboundCaller, number: PhoneNumber, target: CallTarget) -> Call:
    """The unsaved call of `caller`, who dialed `number`."""
    return Call(
        organization=number.organization,
        workflow_id=target.workflow_id,
        workflow_version_id=target.version_id,
        workflow_slug=target.workflow_slug,
        user_id=caller.caller or None,
        user_data={"caller": caller.caller, "called": number.number},
        direction=CallDirection.INBOUND,
        channel=CallChannel.PHONE,
        phone_number=number.number,
        # What fits the column: a caller id may be no number at all ("anonymous").
        from_number=caller.caller if 0 < len(caller.caller) <= FROM_NUMBER_MAX else None,
        sip_trunk_id=number.trunk.livekit_trunk_id,
        room_name=caller.room_name,
        participant_identity=caller.participant_identity,
        status=CallStatus.CONNECTING,
        connect_timeout_seconds=target.connect_timeout_seconds,
        max_duration_seconds=target.max_duration_seconds,
        created_at=timezone.now(),
    )


def _inbound_call_insert(*, call: Call) -> Call:
    """Insert `call` and start it, or fail it over the concurrency limit; the room's
    call already there when another way in inserted first."""
    organization = call.organization
    with transaction.atomic():
        # Whichever way in inserts second waits on the unique room name, then finds the
        # first's call. The call and the counter rows it moves into come before the
        # organization's row, the order every creation and end takes (calls.limits).
        try:
            with transaction.atomic():
                insert_instance(call)
        except IntegrityError:
            existing = Call.objects.filter(room_name=call.room_name).first()
            if existing is None:
                raise
            return existing
        call_counts_lock(organization=organization, statuses=[CallStatus.ACTIVE, CallStatus.FAILED])
        try:
            open_call_reserve(organization=organization)
        except ConcurrencyLimitReached:
            # Counted anyway: ending it below releases its place.
            Organization.objects.filter(pk=organization.pk).update(open_calls=F("open_calls") + 1)
            call_transition(
                call_id=call.pk,
                to_status=CallStatus.FAILED,
                end_reason=EndReason.CONCURRENCY_LIMIT,
                at=call.created_at,
            )
            call_room_close_later(call_id=call.pk, after_seconds=BUSY_ANSWER_SECONDS)
        else:
            call_transition(call_id=call.pk, to_status=CallStatus.ACTIVE, at=call.created_at)
    call.refresh_from_db()
    return call
