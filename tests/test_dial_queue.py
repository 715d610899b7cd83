"""Dialing runs on its own task queue and worker, so a ringing phone (a job can hold
its worker for the whole ringing timeout) never holds up customer webhooks."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from telephony.tasks import phone_call_dial
from webhooks.tasks import deliver_webhook


def test_dialing_has_a_queue_of_its_own() -> None:
    assert phone_call_dial.queue_name == "dial"
    assert deliver_webhook.queue_name != "dial"
    assert "dial" in settings.TASKS["default"]["QUEUES"]


def test_make_run_starts_a_dial_worker_beside_a_worker_for_everything_else() -> None:
    script = (Path(settings.BASE_DIR) / "scripts" / "run_dev.sh").read_text()

    assert "manage.py db_worker --queue-name dial --no-reload &" in script
    assert "manage.py db_worker --queue-name '*' --exclude-queues dial --no-reload &" in script
