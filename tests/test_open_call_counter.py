"""The organization's open-call counter (`Organization.open_calls`): every creation
and every end moves it in its own transaction, it never drifts from the calls it
counts, and `expire_calls` repairs it when something bypassed the state machine."""

from __future__ import annotations

import importlib
import threading
import time

import pytest
from django.apps import apps as django_apps
from django.db import connection, transaction

from accounts.models import Organization
from calls.expiry import calls_expire
from calls.lifecycle import ALLOWED_FROM, EndReason, call_transition
from calls.limits import ConcurrencyLimitReached, open_calls_reconcile
from calls.models import ENDED_STATUSES, NOT_ENDED_STATUSES, Call, CallStatus
from calls.services import call_create
from telephony.dialing import phone_call_create
from telephony.inbound import InboundCaller, inbound_call_get_or_create
from telephony.services import phone_number_verify
from tests.factories import CallFactory, OrganizationFactory, PhoneNumberFactory, WorkflowFactory
from tests.phone import CALLEE, CALLER, INBOUND_NUMBER, inbound_trunk, phone_ready
from workflows.selectors import workflow_call_target

S = CallStatus


def _open_calls(organization: Organization) -> int:
    return Organization.objects.values_list("open_calls", flat=True).get(pk=organization.pk)


def _counted(organization: Organization) -> int:
    return Call.objects.filter(organization=organization, status__in=NOT_ENDED_STATUSES).count()


def test_a_created_call_takes_a_place_and_a_refused_one_takes_none(api, workflow, settings):
    settings.CALLS_CONCURRENCY_LIMIT = 1
    assert api.post("/api/v1/calls", {"workflow_slug": "daily-call"}).status_code == 201

    assert api.post("/api/v1/calls", {"workflow_slug": "daily-call"}).status_code == 429

    assert _open_calls(workflow.organization) == 1


@pytest.mark.parametrize("phone", [False, True], ids=["web", "phone"])
def test_a_call_whose_token_cannot_be_made_is_not_created_nor_counted(
    api, workflow, settings, sip_fake, phone
):
    """A 500 (LiveKit's credentials missing from the configuration) after the insert
    had committed left a `connecting` call holding a place until it timed out."""
    body = {"workflow_slug": "daily-call"}
    if phone:
        phone_ready(workflow.organization)
        body["phone_number"] = CALLEE
    settings.LIVEKIT_API_SECRET = ""
    api.raise_request_exception = False

    response = api.post("/api/v1/calls", body, format="json")

    assert response.status_code == 500
    assert (Call.objects.count(), _open_calls(workflow.organization)) == (0, 0)


@pytest.mark.parametrize(
    ("from_status", "to_status"),
    [(f, t) for t in ENDED_STATUSES for f in sorted(ALLOWED_FROM[t])],
)
def test_every_way_a_call_ends_releases_its_place(workflow, from_status, to_status):
    CallFactory(organization=workflow.organization, workflow=workflow)
    call = CallFactory(organization=workflow.organization, workflow=workflow, status=from_status)
    assert _open_calls(workflow.organization) == 2

    assert call_transition(call_id=call.pk, to_status=to_status, end_reason="user_hangup")

    assert _open_calls(workflow.organization) == 1 == _counted(workflow.organization)


def test_ending_an_ended_call_again_releases_nothing(workflow):
    CallFactory(organization=workflow.organization, workflow=workflow)
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason=EndReason.USER_HANGUP)

    for status in ENDED_STATUSES:
        assert not call_transition(call_id=call.pk, to_status=status, end_reason="again")

    assert _open_calls(workflow.organization) == 1


def test_becoming_active_keeps_the_place(workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow)

    assert call_transition(call_id=call.pk, to_status=S.ACTIVE)

    assert _open_calls(workflow.organization) == 1


def test_the_counter_never_goes_below_zero(workflow):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    Organization.objects.filter(pk=workflow.organization_id).update(open_calls=0)

    call_transition(call_id=call.pk, to_status=S.FAILED, end_reason=EndReason.AGENT_ERROR)

    assert _open_calls(workflow.organization) == 0


def test_reconciling_repairs_a_counter_moved_behind_the_state_machine(workflow, outsider_workflow):
    CallFactory(organization=workflow.organization, workflow=workflow)
    bypassed = CallFactory(organization=workflow.organization, workflow=workflow)
    CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)
    Call.objects.filter(pk=bypassed.pk).update(status=S.COMPLETED)  # e.g. a staff edit
    Organization.objects.filter(pk=outsider_workflow.organization_id).update(open_calls=9)

    assert open_calls_reconcile() == 2

    assert _open_calls(workflow.organization) == 1
    assert _open_calls(outsider_workflow.organization) == 1
    assert open_calls_reconcile() == 0


def test_expire_calls_repairs_the_counters(workflow):
    CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    Organization.objects.filter(pk=workflow.organization_id).update(open_calls=5)

    result = calls_expire()

    assert result.open_counters_repaired == 1
    assert _open_calls(workflow.organization) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_and_ends_leave_the_counter_equal_to_the_open_calls(settings):
    """Eight threads create and end calls of one organization at once, at its limit:
    no place is lost or counted twice, and the limit is never passed."""
    settings.CALLS_CONCURRENCY_LIMIT = 5
    organization = OrganizationFactory()
    workflow = WorkflowFactory(organization=organization, slug="daily-call")
    target = workflow_call_target(organization=organization, slug=workflow.slug)
    barrier = threading.Barrier(8)
    most_open: list[int] = []

    def work() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(15):
                try:
                    call = call_create(organization=organization, target=target).call
                except ConcurrencyLimitReached:
                    continue
                most_open.append(_counted(organization))
                call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most_open and max(most_open) <= 5
    assert _open_calls(organization) == _counted(organization) == 0
    assert open_calls_reconcile() == 0


def _backend_pid() -> int:
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def _waits_for_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row) and row[0] == "Lock"


def _until(check, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("channel", ["web", "phone", "inbound"])
def test_a_call_ending_while_another_is_created_on_the_same_counter_shard_never_deadlocks(
    workflow, channel, request
):
    """Creating a call locked the organization's row, then (inserting) its status
    counter's row; ending one locks the counter rows, then the organization's row
    (releasing its place). Two such transactions on one counter shard (the backend's pid
    % 16) deadlocked: 500s under load, found by the soak (web calls; phone calls,
    outbound and inbound, had the same order). Here a third transaction holds the organization's row
    while the creation and then the end start, on backends of one shard."""
    organization = workflow.organization
    target = workflow_call_target(organization=organization, slug=workflow.slug)
    if channel == "phone":
        request.getfixturevalue("sip_fake")
        phone_ready(organization)
    if channel == "inbound":
        request.getfixturevalue("sip_fake")
        trunk = inbound_trunk(organization)
        phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    # In the status the creation inserts its call in: the counter row both lock.
    created_status = S.PENDING if channel == "phone" else S.CONNECTING
    ending = CallFactory(
        organization=organization, workflow=workflow, status=created_status, open_calls=True
    )
    held, release = threading.Event(), threading.Event()
    pids: dict[str, int] = {}
    errors: list[BaseException] = []

    def hold_the_organization() -> None:
        with transaction.atomic():
            Organization.objects.select_for_update().filter(pk=organization.pk).exists()
            held.set()
            release.wait(10)
        connection.close()

    def create() -> None:
        pids["create"] = _backend_pid()
        try:
            if channel == "phone":
                phone_call_create(organization=organization, target=target, phone_number=CALLEE)
            elif channel == "inbound":
                caller = InboundCaller(
                    room_name="inbound-race",
                    participant_identity="sip_caller",
                    caller=CALLER,
                    called=INBOUND_NUMBER,
                )
                assert inbound_call_get_or_create(caller=caller) is not None
            else:
                call_create(organization=organization, target=target)
        except BaseException as exc:
            errors.append(exc)
        connection.close()

    def end() -> None:
        while _backend_pid() % 16 != pids["create"] % 16:  # the creation's shard
            connection.close()
        pids["end"] = connection.connection.info.backend_pid
        try:
            call_transition(call_id=ending.pk, to_status=S.TIMEOUT, end_reason="connect_timeout")
        except BaseException as exc:
            errors.append(exc)
        connection.close()

    holder = threading.Thread(target=hold_the_organization)
    holder.start()
    held.wait(10)
    creator = threading.Thread(target=create)
    creator.start()
    _until(lambda: "create" in pids and _waits_for_a_lock(pids["create"]))
    ender = threading.Thread(target=end)
    ender.start()
    _until(lambda: "end" in pids and _waits_for_a_lock(pids["end"]))
    release.set()
    for thread in (holder, creator, ender):
        thread.join(30)

    assert errors == []
    assert Call.objects.get(pk=ending.pk).status == S.TIMEOUT
    assert _open_calls(organization) == _counted(organization) == 1


def test_the_migration_starts_each_counter_at_the_organizations_open_calls(
    workflow, outsider_workflow
):
    backfill = importlib.import_module("calls.migrations.0008_open_calls_backfill")
    CallFactory(organization=workflow.organization, workflow=workflow)
    CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    Organization.objects.update(open_calls=7)

    backfill.open_calls_backfill(django_apps, None)

    assert _open_calls(workflow.organization) == 2
    assert _open_calls(outsider_workflow.organization) == 0
