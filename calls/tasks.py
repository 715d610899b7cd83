"""Background tasks of calls (django-tasks; `manage.py db_worker --queue-name '*'`)."""

from __future__ import annotations

import datetime
import uuid

from django.utils import timezone
from django_tasks import task

from calls import services
from voicecalls.logging import log_context
from voicecalls.task_queue import LIVE_CALL_PRIORITY

# A close LiveKit failed is tried again after 1, 2, 4, 8 and 16 minutes: until the room
# goes, the user and the agent of a call recorded as ended may still talk in it.
ROOM_CLOSE_RETRIES = 5


@task(priority=LIVE_CALL_PRIORITY)
def call_room_close(call_id: str, unless_attended: bool = False, attempt: int = 0) -> bool:
    """Delete an ended call's LiveKit room, off the request that ended it."""
    with log_context(call_id=call_id):
        closed = services.call_room_delete(
            call_id=uuid.UUID(call_id), unless_attended=unless_attended
        )
    if not closed and attempt < ROOM_CLOSE_RETRIES:
        retry = call_room_close.using(
            run_after=timezone.now() + datetime.timedelta(minutes=2**attempt)
        )
        options = {"unless_attended": True} if unless_attended else {}
        retry.enqueue(call_id, attempt=attempt + 1, **options)
    return closed
