"""Background tasks (django-tasks; `manage.py db_worker` runs them)."""

from __future__ import annotations

from django_tasks import task

from webhooks.delivery import webhook_delivery_attempt


@task(queue_name="webhooks")
def deliver_webhook(delivery_id: int) -> str | None:
    """Wake a delivery up for its due attempt; its row decides what happens."""
    return webhook_delivery_attempt(delivery_id=delivery_id)
