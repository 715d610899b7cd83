from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from accounts.models import Organization
from calls.models import Call, CallDirection, CallStatus
from voicecalls import livekit
from workflows.models import Workflow


@dataclass(frozen=True)
class CallJoinInfo:
    """What a client needs to join a call's room."""

    call: Call
    token: str

    @property
    def livekit_url(self) -> str:
        from django.conf import settings

        return settings.LIVEKIT_URL


def call_participant_token(*, call: Call) -> str:
    """A fresh LiveKit token for the call's end user (identity `user-<call_id>`)."""
    name = call.user_data.get("name") if isinstance(call.user_data, dict) else None
    return livekit.participant_token(
        room_name=call.room_name,
        identity=f"user-{call.id}",
        name=str(name) if name not in (None, "") else None,
        call_id=str(call.id),
    )


@transaction.atomic
def call_create(
    *,
    organization: Organization,
    workflow: Workflow,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
    direction: str = CallDirection.INBOUND,
) -> CallJoinInfo:
    """Create a call on the workflow's current version and mint the user's token.

    No LiveKit server call: LiveKit creates the room and dispatches the agent when
    the user joins with this token, so creating calls works with LiveKit down.
    """
    version = workflow.current_version
    call = Call.objects.create(
        organization=organization,
        workflow=workflow,
        workflow_version=version,
        workflow_slug=workflow.slug,
        user_id=user_id,
        user_data=user_data or {},
        metadata=metadata or {},
        direction=direction,
        status=CallStatus.CONNECTING,
        connect_timeout_seconds=version.connect_timeout_seconds,
        max_duration_seconds=version.max_duration_seconds,
    )
    return CallJoinInfo(call=call, token=call_participant_token(call=call))
