"""The example receivers (examples/webhook_receiver.py and .mjs), written from
docs/webhooks.md alone, against real deliveries: a customer following the docs verifies
every event, handles it once, and keeps a call's state whatever order events come in."""

from __future__ import annotations

import datetime
import importlib.util
import io
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import call_transition
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.fake_llm import FakeLLM, Outcome
from tests.test_analysis_run import VALID, ended_call
from tests.test_analysis_run import run_worker as run_analysis_worker
from tests.test_webhook_delivery import attempt, record, run_worker
from tests.test_webhook_signing import (
    VECTOR_BODY,
    VECTOR_ID,
    VECTOR_SECRET,
    VECTOR_SIGNATURE,
    VECTOR_TIMESTAMP,
)
from tests.webhook_receiver import Receiver
from webhooks import services
from webhooks.delivery import webhook_delivery_replay
from webhooks.models import EventType, SentEventType, WebhookDelivery

EXAMPLES = Path(settings.BASE_DIR) / "examples"
ALL_EVENTS = [EventType.CALL_STATUS_CHANGED, EventType.CALL_ENDED, EventType.CALL_ANALYZED]
VECTOR_HEADERS = {
    "webhook-id": VECTOR_ID,
    "webhook-timestamp": str(VECTOR_TIMESTAMP),
    "webhook-signature": VECTOR_SIGNATURE,
}


def python_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", EXAMPLES / "webhook_receiver.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def python_receiver(secrets: list[str]) -> Iterator[tuple[str, object]]:
    """The Python example serving on loopback: its URL and its store."""
    example = python_example()
    store = example.Store()
    server = example.server(0, secrets, store)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", store
    finally:
        server.shutdown()
        server.server_close()


NODE_SERVER = """
import {{ receiver }} from {module};
const server = receiver({secrets}, (event) => console.log(JSON.stringify(event)));
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
"""


@contextmanager
def node_receiver(secrets: list[str]) -> Iterator[tuple[str, list[dict]]]:
    """The Node example serving on loopback: its URL and the events it handled."""
    module = json.dumps((EXAMPLES / "webhook_receiver.mjs").as_uri())
    script = NODE_SERVER.format(module=module, secrets=json.dumps(secrets))
    node = subprocess.Popen(
        ["node", "--input-type=module", "-e", script], stdout=subprocess.PIPE, text=True
    )
    port = int(node.stdout.readline())
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(map(json.loads, node.stdout)))
    reader.start()
    try:
        yield f"http://127.0.0.1:{port}/hooks", events
    finally:
        node.terminate()
        reader.join(timeout=5)
        node.wait(timeout=5)


def node_verify(secrets: list[str], headers: dict, body: bytes, now: int) -> bool:
    module = json.dumps((EXAMPLES / "webhook_receiver.mjs").as_uri())
    script = (
        f"import {{ verify }} from {module};"
        f"console.log(verify({json.dumps(secrets)}, {json.dumps(headers)},"
        f" Buffer.from({json.dumps(body.decode())}), {now}))"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("language", ["python", "node"])
def test_the_examples_verify_the_documented_test_vector_and_nothing_else(language: str) -> None:
    verify = python_example().verify if language == "python" else node_verify
    other = "whsec_" + "A" * 43 + "="
    cases = [
        ([VECTOR_SECRET], VECTOR_HEADERS, VECTOR_BODY, VECTOR_TIMESTAMP + 299, True),
        ([other, VECTOR_SECRET], VECTOR_HEADERS, VECTOR_BODY, VECTOR_TIMESTAMP, True),
        ([other], VECTOR_HEADERS, VECTOR_BODY, VECTOR_TIMESTAMP, False),
        ([VECTOR_SECRET], VECTOR_HEADERS, VECTOR_BODY + b" ", VECTOR_TIMESTAMP, False),
        ([VECTOR_SECRET], VECTOR_HEADERS, VECTOR_BODY, VECTOR_TIMESTAMP + 301, False),
        ([VECTOR_SECRET], VECTOR_HEADERS, VECTOR_BODY, VECTOR_TIMESTAMP - 301, False),
        ([VECTOR_SECRET], {**VECTOR_HEADERS, "webhook-timestamp": "x"}, VECTOR_BODY, 0, False),
        ([VECTOR_SECRET], {**VECTOR_HEADERS, "webhook-signature": "v1,é"}, VECTOR_BODY, 0, False),
    ]
    for secrets, headers, body, now, expected in cases:
        assert verify(secrets, headers, body, now=now) is expected, (headers, body, now)


def test_the_python_example_keeps_a_call_right_whatever_order_its_events_come_in(
    organization: Organization, workflow: object, api: object, settings: object
) -> None:
    """Its events delivered last first, and one of them again (a replay): the call ends
    `completed` with its report, each event handled once."""
    settings.WEBHOOKS_END_REPORT_DELAY = 0
    secrets: list[str] = []  # (the server reads the list at each request)
    with python_receiver(secrets) as (url, store):
        _, secret = services.webhook_endpoint_create(
            organization=organization, url=url, events=ALL_EVENTS
        )
        secrets.append(secret)
        out = io.StringIO()
        call_command("simulate_call", "--org", organization.slug, stdout=out)
        call_id = out.getvalue().split()[-1]
        deliveries = list(WebhookDelivery.objects.order_by("-created_at", "-id"))
        for delivery in deliveries:  # the report first, the call's start last
            assert attempt(delivery) == "succeeded"
        webhook_delivery_replay(delivery=deliveries[-1])
        assert attempt(deliveries[-1]) == "succeeded"

    assert sorted(store.handled) == sorted(d.event_id for d in deliveries)
    call = store.calls[call_id]
    assert (call["status"], call["end_reason"]) == ("completed", "user_hangup")
    assert call["report"]["call"] == api.get(f"/api/v1/calls/{call_id}").json()
    assert WebhookDelivery.objects.get(pk=deliveries[-1].pk).attempt_count == 2


@pytest.mark.django_db(transaction=True)
def test_the_python_example_takes_an_analysis_finished_after_the_report(
    organization: Organization, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Outcome.answer(VALID)
    secrets: list[str] = []
    with python_receiver(secrets) as (url, store):
        _, secret = services.webhook_endpoint_create(
            organization=organization, url=url, events=ALL_EVENTS
        )
        secrets.append(secret)
        call = ended_call(organization)
        run_worker()  # the status change and the report, the analysis still pending
        run_analysis_worker()
        run_worker()

    assert len(store.handled) == 3
    kept = store.calls[str(call.pk)]
    assert kept["report"]["call"]["analysis"]["status"] == "pending"
    assert kept["analysis"] == {
        "status": "completed",
        **VALID,
        "error": None,
        "model": "gpt-4.1-mini",
    }


@pytest.mark.django_db(transaction=True)
def test_the_node_example_gets_every_event_once_through_a_secret_rotation(
    organization: Organization, workflow: object, settings: object
) -> None:
    """Given the secret from before a rotation only, it still verifies every delivery
    of the next 24 hours."""
    settings.WEBHOOKS_END_REPORT_DELAY = 0
    endpoint, old = services.webhook_endpoint_create(
        organization=organization, url="http://127.0.0.1:9/hooks", events=ALL_EVENTS
    )
    services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    with node_receiver([old]) as (url, events):
        services.webhook_endpoint_update(endpoint=endpoint, url=url)
        out = io.StringIO()
        call_command("simulate_call", "--org", organization.slug, stdout=out)
        run_worker()
        delivery = WebhookDelivery.objects.order_by("id").first()
        webhook_delivery_replay(delivery=delivery)
        run_worker()
        deadline = time.monotonic() + 5
        while len(events) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert WebhookDelivery.objects.filter(status="succeeded").count() == 3
    assert sorted(e["type"] for e in events) == [
        "call.ended",
        "call.status_changed",
        "call.status_changed",
    ]


@pytest.mark.django_db(transaction=True)
def test_both_examples_answer_a_test_event_with_2xx(api, organization: Organization) -> None:
    """`webhook.test` is a type they do not handle: as the docs say, they answer 2xx."""
    secrets: list[str] = []
    with python_receiver(secrets) as (url, store):
        endpoint, secret = services.webhook_endpoint_create(
            organization=organization, url=url, events=[EventType.CALL_ENDED]
        )
        secrets.append(secret)
        python_test = api.post(f"/api/v1/webhook-endpoints/{endpoint.id}/test").json()
        run_worker()
    with node_receiver([secret]) as (url, events):
        services.webhook_endpoint_update(endpoint=endpoint, url=url)
        node_test = api.post(f"/api/v1/webhook-endpoints/{endpoint.id}/test").json()
        run_worker()
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)

    assert store.handled == {python_test["event_id"]}
    assert [e["type"] for e in events] == ["webhook.test"]
    delivered = WebhookDelivery.objects.filter(pk__in=[python_test["id"], node_test["id"]])
    assert sorted(d.status for d in delivered) == ["succeeded", "succeeded"]


def test_the_docs_describe_every_event_type_sent() -> None:
    """A customer reads the payloads there: each type the service sends has its own
    paragraph and an example body."""
    docs = (Path(settings.BASE_DIR) / "docs" / "webhooks.md").read_text()
    for event_type in SentEventType.values:
        assert f"\n`{event_type}` — " in docs, event_type
        assert f'"type": "{event_type}"' in docs, event_type


def test_the_docs_verify_function_checks_a_real_delivery(organization: Organization) -> None:
    """The standard-library `verify` shown in docs/webhooks.md, run as it is printed."""
    docs = (Path(settings.BASE_DIR) / "docs" / "webhooks.md").read_text()
    code = re.search(r"```python\n(import base64.*?)```", docs, re.DOTALL).group(1)
    namespace: dict = {}
    exec(code, namespace)
    with Receiver() as receiver:
        _, secret = services.webhook_endpoint_create(
            organization=organization, url=receiver.url, events=ALL_EVENTS
        )
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
        attempt(WebhookDelivery.objects.get())

    (got,) = receiver.received
    assert namespace["verify"](secret, got.headers, got.body)
    assert not namespace["verify"](secret, got.headers, got.body + b" ")
    assert not namespace["verify"](secret, {**got.headers, "webhook-signature": "v1,é"}, got.body)


@pytest.mark.parametrize("arrival", ["in order", "last first"])
def test_the_python_example_follows_a_phone_call_whose_answer_is_stamped_before_its_dial(
    organization: Organization, workflow: object, arrival: str
) -> None:
    """LiveKit stamps a join in whole seconds, by its own clock: a phone call answered
    within the second it was dialed has `connecting → active` stamped before
    `pending → connecting`. However they arrive, the receiver ends with `active`."""
    secrets: list[str] = []
    with python_receiver(secrets) as (url, store):
        _, secret = services.webhook_endpoint_create(
            organization=organization, url=url, events=[EventType.CALL_STATUS_CHANGED]
        )
        secrets.append(secret)
        created = timezone.now().replace(microsecond=0)
        call = CallFactory(organization=organization, status=CallStatus.PENDING, created_at=created)
        dialed = created + datetime.timedelta(microseconds=700_000)
        assert call_transition(call_id=call.pk, to_status=CallStatus.CONNECTING, at=dialed)
        assert call_transition(call_id=call.pk, to_status=CallStatus.ACTIVE, at=created)
        deliveries = list(WebhookDelivery.objects.order_by("created_at", "id"))
        for delivery in deliveries if arrival == "in order" else deliveries[::-1]:
            assert attempt(delivery) == "succeeded"

    assert store.calls[str(call.pk)]["status"] == "active"
