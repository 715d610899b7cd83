"""The `dial` task queue: its own worker (`db_worker --queue-name dial`), so a ringing
phone never holds up customer-webhook delivery."""

from __future__ import annotations

import uuid

from django_tasks import task

from telephony import dialing
from voicecalls.logging import log_context


@task(queue_name="dial")
def phone_call_dial(call_id: str) -> str:
    with log_context(call_id=call_id):
        return dialing.phone_call_dial(call_id=uuid.UUID(call_id))
