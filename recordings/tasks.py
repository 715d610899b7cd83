"""Background tasks of recordings (django-tasks; `manage.py db_worker --queue-name '*'`)."""

from __future__ import annotations

from django_tasks import task

from recordings import deletion, services, storage
from voicecalls.task_queue import LIVE_CALL_PRIORITY


@task(priority=LIVE_CALL_PRIORITY)
def recording_start(recording_id: str) -> str:
    """Ask LiveKit to start recording a call that became active, off the request (or
    webhook) that made it active."""
    return services.recording_start(recording_id=recording_id)


@task()
def recording_file_delete(recording_id: str, attempt: int = 0) -> bool:
    """Delete a file the egress finished writing after its recording was deleted. Nothing
    else will look at it again (the row is `deleted`): a storage failure is retried."""
    try:
        return deletion.recording_file_delete(recording_id=recording_id)
    except deletion.StorageRemoved:
        # The organization's own bucket, whose setting it removed: out of reach for good.
        deletion.late_file_settled(recording_id)
        return False
    except storage.StorageError as exc:
        deletion.recording_file_delete_retry(recording_id=recording_id, attempt=attempt, error=exc)
        return False
