"""Recordings whose egress webhooks LiveKit could not deliver, made up for by asking
LiveKit (`expire_calls` runs it, as it reconciles calls whose room webhooks were lost)."""

from __future__ import annotations

import datetime
import logging

from django.db import transaction

from calls.models import ENDED_STATUSES
from recordings.models import Recording
from recordings.models import RecordingStatus as S
from recordings.services import EGRESS_STATUSES, recording_egress_update
from voicecalls import livekit_egress
from voicecalls.livekit import EgressUpdate, LiveKitError

logger = logging.getLogger(__name__)

# LiveKit retries a webhook for well under a minute, and the egress uploads within
# seconds of the room closing: an egress of a call ended longer ago than this whose end
# we never heard of lost its webhooks (DESIGN.md "LiveKit webhooks"), and LiveKit is asked.
RECONCILE_AFTER = datetime.timedelta(minutes=10)
RECONCILE_BATCH = 100
_TERMINAL = {S.COMPLETE, S.FAILED}


def recordings_reconcile(*, now: datetime.datetime) -> tuple[int, int]:
    """Apply what LiveKit says now (ListEgress) of the egresses of calls ended before
    RECONCILE_AFTER whose `egress_ended` never came: a recording still `starting`,
    `recording` or `processing`, or one deleted while its egress wrote (its late file
    goes); an egress still running is stopped (StopEgress). (reconciled, LiveKit
    errors); a LiveKit failure stops this pass."""
    open_or_deleted_while_writing = Recording.objects.filter(
        egress_id__isnull=False,
        call__status__in=ENDED_STATUSES,
        call__ended_at__lte=now - RECONCILE_AFTER,
        ended_at__isnull=True,
        status__in=[S.STARTING, S.RECORDING, S.PROCESSING, S.DELETED],
    )
    reconciled = 0
    for pk, egress_id, room_name in open_or_deleted_while_writing.order_by(
        "created_at"
    ).values_list("pk", "egress_id", "call__room_name")[:RECONCILE_BATCH]:
        try:
            egress = livekit_egress.egress_status(egress_id=egress_id)
        except LiveKitError as exc:
            logger.warning("recordings: cannot reconcile egress %s: %s", egress_id, exc)
            return reconciled, 1
        if egress is not None and EGRESS_STATUSES.get(egress.status) not in _TERMINAL:
            if egress.status in ("EGRESS_STARTING", "EGRESS_ACTIVE"):
                # Still running long after its call ended (the room outlived the call):
                # it records nobody it should. Stopped, it finishes its file; the next
                # pass (or its webhook) sees it ended. (Ending: it is finishing already.)
                try:
                    livekit_egress.egress_stop(egress_id=egress_id)
                except LiveKitError as exc:
                    logger.warning("recordings: cannot stop egress %s: %s", egress_id, exc)
            continue
        with transaction.atomic():
            if egress is None:
                # LiveKit forgot it: whatever it wrote is past knowing; a deleted
                # recording's key is deleted once more all the same.
                egress = EgressUpdate(
                    egress_id=egress_id,
                    status="EGRESS_FAILED",
                    error="LiveKit no longer knows this recording's egress.",
                )
            recording_egress_update(egress=egress, room_name=room_name, at=now)
            # A deleted one keeps no status of the egress: marked ended, it is not
            # asked about again.
            Recording.objects.filter(pk=pk, ended_at__isnull=True).update(ended_at=now)
        reconciled += 1
    return reconciled, 0
