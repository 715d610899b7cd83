"""`calls.listing`: the list's filtered statement, compiled once per shape of filters
with stand-ins, answers every request with that request's own values, exactly as the
ORM's query of the same filters does."""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext

from analysis.models import AnalysisStatus, CallAnalysis
from calls.listing import CallListing, _filtered_statement, call_list
from calls.models import Call, CallStatus
from tests.factories import CallFactory, OrganizationFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

T = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)


@pytest.fixture
def calls(organization) -> dict:
    """Two workflows, two users, calls started across two days; half analysed."""
    workflows = [WorkflowFactory(organization=organization) for _ in range(2)]
    made = []
    for i, (workflow, user) in enumerate(itertools.product(workflows * 3, ["ann", "bob"])):
        started = T + datetime.timedelta(hours=4 * i)
        call = CallFactory(
            organization=organization,
            workflow=workflow,
            user_id=user,
            status=CallStatus.COMPLETED if i % 2 else CallStatus.FAILED,
            direction="outbound" if i % 4 < 2 else "inbound",
            end_reason=("voicemail", "no_answer", "user_hangup")[i % 3],
            created_at=started - datetime.timedelta(seconds=5),
            started_at=started,
            ended_at=started + datetime.timedelta(minutes=1),
        )
        if i % 3:
            CallAnalysis.objects.create(
                call=call, status=AnalysisStatus.COMPLETED, success=bool(i % 2)
            )
        made.append(call)
    # Another organization's calls match every filter but never its lists.
    other = OrganizationFactory()
    CallFactory(organization=other, user_id="ann", started_at=T, created_at=T, completed=True)
    return {"workflows": workflows, "calls": made}


def _ids(query: dict, organization) -> tuple[list[str], int]:
    listing = call_list(organization=organization, filters=QueryDict(urlencode(query)))
    return [str(row["id"]) for row in listing.page(0, 100)], listing.total()


def _orm_ids(query: dict, organization) -> tuple[list[str], int]:
    listing = call_list(organization=organization, filters=QueryDict(urlencode(query)))
    ordered = listing.calls().order_by("-created_at", "-id")
    return [str(pk) for pk in ordered.values_list("pk", flat=True)], ordered.count()


def _queries(workflows) -> list[dict]:
    day = datetime.timedelta(days=1)
    return [
        {},
        {"user_id": "ann"},
        {"user_id": "bob"},
        {"workflow_id": str(workflows[0].pk), "user_id": "bob"},
        {"workflow_id": str(workflows[1].pk), "user_id": "ann"},
        {"status": "completed", "user_id": "ann"},
        {"status": "failed,completed", "workflow_id": str(workflows[1].pk)},
        {"started_after": T.isoformat(), "started_before": (T + day).isoformat()},
        {"started_after": (T + day / 2).isoformat(), "started_before": (T + 2 * day).isoformat()},
        {"started_after": (T + day).isoformat(), "user_id": "bob"},
        {"started_before": (T + day / 3).isoformat()},
        {"success": "true", "user_id": "ann"},
        {"success": "false", "workflow_id": str(workflows[0].pk)},
        {"analysis_status": "completed", "started_after": T.isoformat()},
        {"direction": "outbound"},
        {"direction": "inbound", "user_id": "ann", "status": "completed"},
        {"end_reason": "voicemail"},
        {"end_reason": "no_answer,voicemail", "direction": "outbound"},
        {"end_reason": "caller_wants_a_callback,voicemail", "user_id": "ann"},
        {"end_reason": "user_hangup", "workflow_id": str(workflows[1].pk), "success": "true"},
        {"direction": "outbound", "started_before": (T + day).isoformat()},
    ]


@pytest.mark.postgres
def test_every_request_of_a_shape_gets_its_own_values_answered_as_the_orm_answers(
    organization, calls
) -> None:
    _filtered_statement.cache_clear()
    for query in _queries(calls["workflows"]) * 2:  # the second time from the cache
        assert _ids(query, organization) == _orm_ids(query, organization), query
    assert _filtered_statement.cache_info().hits > 0


@pytest.mark.postgres
def test_a_shape_compiled_for_one_organization_answers_another_with_its_own_calls(
    organization, calls
) -> None:
    other = OrganizationFactory()
    theirs = CallFactory(organization=other, user_id="ann", completed=True)

    assert len(_ids({"user_id": "ann"}, organization)[0]) == 6
    assert _ids({"user_id": "ann"}, other) == ([str(theirs.id)], 1)


@pytest.mark.postgres
def test_a_statement_names_every_value_its_stand_ins_stood_for() -> None:
    statement = _filtered_statement(
        (("status", ("completed",)), ("user_id", None), ("started_after", None))
    )

    assert sorted({name for name, _ in statement.slots if name}) == [
        "created_at__gte",
        "organization",
        "started_after",
        "user_id",
    ]
    # The status is a constant of the shape, written into the text (see StandInStatement).
    assert [constant for name, constant in statement.slots if not name] == []
    assert "IN ('completed')" in statement.sql or "= 'completed'" in statement.sql


def _plan(sql: str, params: Sequence = ()) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params or None)
        return "\n".join(line for (line,) in cursor.fetchall())


def _page_as_sent(listing: CallListing) -> tuple[list[dict], tuple[str, Sequence]]:
    """The first page's rows, and its one statement as sent, with its values (a
    prepared one's captured text has only $1, $2…)."""
    sent: list[tuple[str, Sequence]] = []

    def record(execute: Callable, sql: str, params: Sequence, many: bool, context: dict):
        sent.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        rows = listing.page(0, 20)
    (statement,) = sent
    return rows, statement


def _index_paths_only() -> None:
    """Fresh statistics, and seq scans, bitmap scans and sorts disallowed for the rest of
    the test's transaction, so the planner shows the index path a big table gets (on a
    few thousand rows every path costs about the same)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE calls_call")
        for method in ("seqscan", "bitmapscan", "sort"):
            cursor.execute(f"SET LOCAL enable_{method} = off")


def _ended_calls_a_minute_apart(count: int, fields: Callable[[int], dict]) -> list[Call]:
    """`count` calls created a minute apart from T, each started 3 s after its creation
    and ended a minute later, the i-th with `fields(i)`."""
    return Call.objects.bulk_create(
        CallFactory.build(
            **{
                "end_reason": "user_hangup",
                "created_at": T + datetime.timedelta(minutes=i),
                "started_at": T + datetime.timedelta(minutes=i, seconds=3),
                "ended_at": T + datetime.timedelta(minutes=i + 1),
                **fields(i),
            }
        )
        for i in range(count)
    )


@pytest.mark.postgres
def test_a_started_windows_page_and_count_are_read_from_their_indexes_alone(organization) -> None:
    """A window's first page walks the creation-order index newest first and checks
    started_at there; its count by workflow and status reads a workflow index alone
    (either carries the window's columns and the status)."""
    workflow = WorkflowFactory(organization=organization)
    others = OrganizationFactory()
    other_workflow = WorkflowFactory(organization=others)
    _ended_calls_a_minute_apart(
        3000,
        lambda i: {
            "organization": organization if i % 10 == 0 else others,
            "workflow": workflow if i % 10 == 0 else other_workflow,
            "status": CallStatus.COMPLETED,
        },
    )
    window = {
        "started_after": T.isoformat(),
        "started_before": (T + datetime.timedelta(days=1)).isoformat(),
    }
    alone = call_list(organization=organization, filters=QueryDict(urlencode(window)))
    narrowed = {**window, "workflow_id": str(workflow.pk), "status": "completed"}
    by_workflow = call_list(organization=organization, filters=QueryDict(urlencode(narrowed)))
    with CaptureQueriesContext(connection) as queries:
        assert len(alone.page(0, 20)) == 20
        assert by_workflow.total() == 144
    page, count = (query["sql"] for query in queries.captured_queries)
    _index_paths_only()

    assert "Index Only Scan using call_org_created" in _plan(page)
    assert re.search(r"Index Only Scan using call_org_workflow(_started)? on", _plan(count))


@pytest.mark.postgres
def test_a_workflow_without_verdicts_finds_none_without_walking_other_workflows_verdicts(
    organization,
) -> None:
    """`workflow_id` + `success` is one range of its own index: for a workflow that asks
    for no analysis the page reads a leaf or two, however many verdicts the
    organization's other workflows have."""
    quiet, judged = WorkflowFactory.create_batch(2, organization=organization)
    calls = _ended_calls_a_minute_apart(
        3000, lambda i: {"organization": organization, "workflow": judged}
    )
    CallAnalysis.objects.bulk_create(
        CallAnalysis(call=call, status=AnalysisStatus.COMPLETED, success=True) for call in calls
    )
    filters = {"workflow_id": str(quiet.pk), "success": "true"}
    listing = call_list(organization=organization, filters=QueryDict(urlencode(filters)))
    rows, (page, params) = _page_as_sent(listing)
    assert rows == []
    _index_paths_only()
    plan = _plan("(ANALYZE, BUFFERS) " + page, params)

    assert "Index Only Scan using call_org_workflow_success on" in plan
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if "Index Only Scan" in line)
    buffers = next((line for line in lines[scan:] if "Buffers:" in line), "hit=0")
    assert int(re.search(r"hit=(\d+)", buffers).group(1)) <= 3, plan


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("narrowed_by", "index"),
    [
        ("workflow and status", "call_org_workflow"),
        ("user and status", "call_org_user"),
        ("status and window", "call_org_status"),
        ("verdict and workflow", "call_org_workflow_success"),
        ("analysis status and status", "call_org_analysis_status"),
        ("direction and status", "call_org_direction"),
        ("direction and workflow", "call_org_direction"),
        ("end reason", "call_org_end_reason"),
        ("end reason and direction", "call_org_end_reason"),
        ("the agent's own end reason", "call_org_end_reason"),
    ],
)
def test_a_page_narrowed_by_two_filters_checks_the_second_in_its_index(
    organization, narrowed_by: str, index: str
) -> None:
    """A page walks its first filter's index newest first and checks the other filters'
    columns there, reading no table row for a call that does not match (a burst of
    recent calls in another status costs an index entry each)."""
    workflow, other_workflow = WorkflowFactory.create_batch(2, organization=organization)
    calls = _ended_calls_a_minute_apart(
        3000,
        lambda i: {
            "organization": organization,
            "workflow": workflow if i % 10 == 0 else other_workflow,
            "user_id": "ann" if i % 10 == 0 else f"user-{i}",
            "status": CallStatus.COMPLETED if i % 3 else CallStatus.FAILED,
            # Inbound one in five (the workflow's calls); three rare end reasons, outbound,
            # one of them an agent's own.
            "direction": "inbound" if i % 5 == 0 else "outbound",
            "end_reason": {1: "no_answer", 2: "busy", 3: "caller_wants_a_callback"}.get(
                i % 10, "user_hangup"
            ),
        },
    )
    # Analysed: one in seven failed, the others completed, judged unsuccessful one in four.
    CallAnalysis.objects.bulk_create(
        CallAnalysis(call=call, status=AnalysisStatus.COMPLETED, success=i % 4 != 0)
        if i % 7
        else CallAnalysis(call=call, status=AnalysisStatus.FAILED)
        for i, call in enumerate(calls)
    )
    filters = {
        "workflow and status": {"workflow_id": str(workflow.pk), "status": "completed"},
        "user and status": {"user_id": "ann", "status": "completed"},
        "status and window": {
            "status": "completed",
            "started_after": T.isoformat(),
            "started_before": (T + datetime.timedelta(days=1)).isoformat(),
        },
        "verdict and workflow": {"success": "false", "workflow_id": str(workflow.pk)},
        "analysis status and status": {"analysis_status": "failed", "status": "completed"},
        "direction and status": {"direction": "inbound", "status": "completed"},
        "direction and workflow": {"direction": "inbound", "workflow_id": str(workflow.pk)},
        "end reason": {"end_reason": "no_answer"},
        "end reason and direction": {"end_reason": "no_answer", "direction": "outbound"},
        "the agent's own end reason": {"end_reason": "caller_wants_a_callback"},
    }[narrowed_by]
    listing = call_list(organization=organization, filters=QueryDict(urlencode(filters)))
    rows, (page, params) = _page_as_sent(listing)
    assert len(rows) == 20
    _index_paths_only()

    assert f"Index Only Scan using {index} on" in _plan(page, params)
