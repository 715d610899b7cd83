"""What the shared task worker (`db_worker --queue-name '*' --exclude-queues dial`) takes
first: the jobs of live calls (closing an ended call's room, starting a recording) go
before any organization's backlog of webhook deliveries and analyses."""

from __future__ import annotations

import pytest
from django_tasks_db.models import DBTaskResult

from accounts.models import Organization
from calls.models import CallStatus
from calls.tasks import call_room_close
from recordings.tasks import recording_start
from tests.factories import CallFactory
from tests.tasks import run_task_worker
from tests.test_webhook_delivery import endpoint_create, record
from tests.webhook_receiver import Receiver
from webhooks.models import EventType, WebhookDelivery
from webhooks.tasks import deliver_webhook


def run_one_task() -> None:
    run_task_worker("*", "--exclude-queues", "dial", "--max-tasks", "1")


def ready(task) -> int:
    return DBTaskResult.objects.ready().filter(task_path=task.module_path).count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("live_task", [call_room_close, recording_start])
def test_a_live_calls_job_goes_before_another_organizations_webhook_backlog(
    organization: Organization, outsider: Organization, fake_livekit, live_task
) -> None:
    """Jobs were taken in the order queued (webhooks, analyses and the rest alike): one
    organization's thousands of deliveries due (a campaign's calls ending) held another's
    ended call's room open, its agent still talking and billed, and its recording
    unstarted, until every one of them was sent."""
    with Receiver() as receiver:
        endpoint_create(outsider, receiver.url, [EventType.CALL_STATUS_CHANGED])
        for _ in range(3):
            record(CallFactory(organization=outsider), CallStatus.CONNECTING, CallStatus.ACTIVE)
        call = CallFactory(organization=organization)
        live_task.enqueue(str(call.pk))
        assert (ready(deliver_webhook), ready(live_task)) == (3, 1)

        run_one_task()

        assert (ready(deliver_webhook), ready(live_task)) == (3, 0)
        assert receiver.received == []
    assert WebhookDelivery.objects.filter(status="pending").count() == 3
