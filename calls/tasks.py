"""Background tasks of calls (django-tasks; `manage.py db_worker --queue-name '*'`)."""

from __future__ import annotations

import uuid

from django_tasks import task

from calls import services


@task()
def call_room_close(call_id: str, unless_attended: bool = False) -> bool:
    """Delete an ended call's LiveKit room, off the request that ended it."""
    return services.call_room_delete(call_id=uuid.UUID(call_id), unless_attended=unless_attended)
