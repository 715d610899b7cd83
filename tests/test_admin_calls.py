"""The staff console for calls: list, search, call page, active calls, dashboard."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analysis.models import CallAnalysis
from calls.admin import CallAdmin
from calls.admin_paging import COUNT_CAP, ProbedDatesQuerySet
from calls.models import Call, CallStatus, MetricSample
from tests.factories import (
    CallFactory,
    RecordingFactory,
    TranscriptEntryFactory,
    WorkflowFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-admin-123")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def support(db: None) -> Client:
    user = User.objects.create_user("support", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    client = Client()
    client.force_login(user)
    return client


def test_the_change_list_shows_calls_with_status_badges(staff: Client, organization) -> None:
    call = CallFactory(organization=organization, active=True, user_id="user-777")

    response = staff.get("/admin/calls/call/")

    html = response.content.decode()
    assert response.status_code == 200
    assert str(call.id)[:8] in html
    assert "vc-status-active" in html
    assert "user-777" in html
    assert "greeter-agent" in html


@pytest.mark.parametrize("term", ["{id}", "call-{id}", "  {id} "])
def test_search_finds_a_call_by_id_or_room_name(staff: Client, organization, term: str) -> None:
    call = CallFactory(organization=organization)
    other = CallFactory(organization=organization)

    html = staff.get("/admin/calls/call/", {"q": term.format(id=call.id)}).content.decode()

    assert str(call.id)[:8] in html
    assert str(other.id)[:8] not in html


def test_search_finds_calls_by_exact_user_id(staff: Client, organization) -> None:
    mine = CallFactory(organization=organization, user_id="user-123")
    other = CallFactory(organization=organization, user_id="user-1234")

    html = staff.get("/admin/calls/call/", {"q": "user-123"}).content.decode()
    other_case = staff.get("/admin/calls/call/", {"q": "USER-123"}).content.decode()

    assert str(mine.id)[:8] in html
    assert str(other.id)[:8] not in html
    # Exact as the API's user_id filter (and an index range): case matters.
    assert str(mine.id)[:8] not in other_case


@pytest.mark.parametrize(
    "found_by",
    [
        {"user_id": "0b9a8c1e-54f0-4d4e-9a51-3f6b0e1c2d7a"},  # a user id shaped like a call id
        {"channel": "phone", "room_name": "inbound-_+14155550123_Xq7bKp2LmN"},  # LiveKit's
    ],
    ids=["user-id-like-a-call-id", "inbound-room-name"],
)
def test_search_finds_a_call_by_a_user_id_or_room_name_of_any_shape(
    staff: Client, organization, found_by: dict
) -> None:
    call = CallFactory(organization=organization, **found_by)
    other = CallFactory(organization=organization)
    term = found_by.get("user_id") or found_by["room_name"]

    html = staff.get("/admin/calls/call/", {"q": term}).content.decode()

    assert str(call.id)[:8] in html
    assert str(other.id)[:8] not in html


def _phone_call(organization, direction: str, **fields: object) -> Call:
    return CallFactory(organization=organization, channel="phone", direction=direction, **fields)


@pytest.mark.parametrize(
    "term",
    ["+14155550123", "+1 415 555 0123", "1-415-555-0123", "14155550123", "+1 (415) 555.0123"],
)
def test_search_finds_phone_calls_by_the_number_however_it_is_typed(
    staff: Client, organization, term: str
) -> None:
    """Staff asked about a number found its calls only by an exact user id, which an
    outbound call's callee is not (the client's own id) and an inbound caller's is
    only as LiveKit wrote it."""
    callee = _phone_call(organization, "outbound", phone_number="+14155550123", user_id="u-1")
    caller = _phone_call(
        organization, "inbound", from_number="+14155550123", phone_number="+14155550100"
    )
    other = _phone_call(organization, "outbound", phone_number="+14155550124", user_id="u-2")

    html = staff.get("/admin/calls/call/", {"q": term}).content.decode()

    assert str(callee.id)[:8] in html
    assert str(caller.id)[:8] in html
    assert str(other.id)[:8] not in html


def test_a_number_search_leaves_the_other_searches_as_they_were(
    staff: Client, organization
) -> None:
    """A user id of digits is still found exactly, and an id still finds its call."""
    digits = CallFactory(organization=organization, user_id="4155550123")
    by_id = CallFactory(organization=organization)
    other = _phone_call(organization, "outbound", phone_number="+14155550123")

    by_digits = staff.get("/admin/calls/call/", {"q": "4155550123"}).content.decode()
    by_call_id = staff.get("/admin/calls/call/", {"q": str(by_id.id)}).content.decode()

    assert str(digits.id)[:8] in by_digits
    assert str(other.id)[:8] not in by_digits  # no country code: not a number
    assert str(by_id.id)[:8] in by_call_id and str(other.id)[:8] not in by_call_id


@pytest.mark.parametrize("term", ["555", "+1415555", "+1 415", "sk-live-4f8a9b0c1d2e3f40", "%"])
def test_a_search_finds_no_call_by_part_of_a_number_nor_by_text_in_its_data(
    staff: Client, organization, term: str
) -> None:
    """Whole numbers only: no listing every caller by a fragment, and user data and
    metadata (clients put anything there, secrets too) are not searched."""
    call = _phone_call(
        organization,
        "outbound",
        phone_number="+14155550123",
        user_data={"phone": "555", "api_key": "sk-live-4f8a9b0c1d2e3f40"},
        metadata={"note": "+1 415 555"},
    )

    html = staff.get("/admin/calls/call/", {"q": term}).content.decode()

    assert str(call.id)[:8] not in html
    assert "+14155550123" not in html


@pytest.mark.postgres
def test_a_number_search_reads_the_number_indexes_not_every_call(
    staff: Client, organization
) -> None:
    """Every organization's calls are searched: each arm of the search must be an index
    lookup, or a number's search reads the whole table (a million calls and more)."""
    Call.objects.bulk_create(
        CallFactory.build(
            organization=organization,
            channel="phone" if i % 2 else "web",
            direction="outbound" if i % 4 == 1 else "inbound",
            phone_number=f"+1415555{i:04d}",
            from_number=f"+1212555{i:04d}",
            started_at=timezone.now() - datetime.timedelta(minutes=i),
        )
        for i in range(3000)
    )
    caller = Call.objects.get(from_number="+12125550003")
    with CaptureQueriesContext(connection) as queries:
        html = staff.get("/admin/calls/call/", {"q": "+1 212 555 0003"}).content.decode()
    searches = [q["sql"] for q in queries.captured_queries if "+12125550003" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE calls_call")
        cursor.execute("SET LOCAL enable_seqscan = off")  # what a big table gets
        plans = []
        for sql in searches:
            cursor.execute("EXPLAIN " + sql)
            plans.append("\n".join(line for (line,) in cursor.fetchall()))

    assert str(caller.id)[:8] in html
    assert plans
    assert not any("Seq Scan on calls_call" in plan for plan in plans), plans
    assert all("call_callee" in plan and "call_caller" in plan for plan in plans), plans


def test_ending_a_call_being_transferred_is_a_message_not_a_500(
    staff: Client, organization
) -> None:
    call = CallFactory(organization=organization, active=True)
    Call.objects.filter(pk=call.pk).update(
        hangup_requested_at=timezone.now(),
        end_reason="transferred",
        transfer_destination="+14155550199",
    )
    staff.raise_request_exception = False

    response = staff.post(f"/admin/calls/call/{call.id}/end/", {"next": "/admin/"}, follow=True)

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "The call is being transferred: it ends when the transfer does."
    ]
    call.refresh_from_db()
    assert call.status == CallStatus.ACTIVE


def test_filters_narrow_the_list(staff: Client, organization) -> None:
    active = CallFactory(organization=organization, active=True)
    done = CallFactory(organization=organization, completed=True)

    html = staff.get("/admin/calls/call/", {"status__exact": "active"}).content.decode()

    assert str(active.id)[:8] in html
    assert str(done.id)[:8] not in html


def test_the_workflow_filter_names_each_workflows_organization(
    staff: Client, organization, outsider
) -> None:
    """Slugs repeat across organizations (every demo organization has daily-call): the
    filter listed the same name once per organization, with nothing to tell them apart."""
    ours = WorkflowFactory(organization=organization, slug="daily-call")
    theirs = WorkflowFactory(organization=outsider, slug="daily-call")
    other = WorkflowFactory(organization=organization, slug="reminder")
    CallFactory(organization=organization, workflow=ours)

    html = staff.get("/admin/calls/call/").content.decode()
    assert f"{organization.slug} / daily-call" in html
    assert f"{outsider.slug} / daily-call" in html

    chosen = {"organization__id__exact": str(organization.pk)}
    html = staff.get("/admin/calls/call/", chosen).content.decode()
    assert f"workflow__id__exact={ours.pk}" in html
    assert f"workflow__id__exact={other.pk}" in html
    assert f"workflow__id__exact={theirs.pk}" not in html


def test_the_count_stops_at_the_cap(staff: Client, organization, monkeypatch) -> None:
    monkeypatch.setattr("calls.admin_paging.COUNT_CAP", 3)
    CallFactory.create_batch(5, organization=organization)

    html = staff.get("/admin/calls/call/").content.decode()

    assert 'id="count-capped"' in html
    assert COUNT_CAP == 10_000
    assert '<span id="capped-count">3+</span> calls' in html


# Paging at a million calls, in miniature: the count stops at COUNT_CAP, 2 calls a page.
@pytest.fixture
def twelve_calls(organization, monkeypatch) -> list[str]:
    """Twelve calls, newest first (the list's order), as the list shows their ids."""
    monkeypatch.setattr(CallAdmin, "list_per_page", 2)
    start = timezone.now()
    calls = [
        CallFactory(organization=organization, created_at=start - datetime.timedelta(minutes=i))
        for i in range(12)
    ]
    return [str(call.id)[:8] for call in calls]


def shown(html: str, ids: list[str]) -> list[str]:
    return [short for short in ids if short in html]


def test_pages_past_the_counted_calls_keep_paging(
    staff: Client, twelve_calls: list[str], monkeypatch
) -> None:
    monkeypatch.setattr("calls.admin_paging.COUNT_CAP", 4)  # counts 5: pages 1-3

    last_counted = staff.get("/admin/calls/call/", {"p": 3})
    past_count = staff.get("/admin/calls/call/", {"p": 5})

    assert shown(last_counted.content.decode(), twelve_calls) == twelve_calls[4:6]
    assert past_count.status_code == 200
    html = past_count.content.decode()
    assert shown(html, twelve_calls) == twelve_calls[8:10]
    assert 'id="page-past-count"' in html
    assert '<span class="this-page">5</span>' in html
    assert "?p=6" in html  # and on to the next page


def test_a_page_past_the_last_call_says_so_instead_of_showing_page_1(
    staff: Client, twelve_calls: list[str], monkeypatch
) -> None:
    monkeypatch.setattr("calls.admin_paging.COUNT_CAP", 4)

    response = staff.get("/admin/calls/call/", {"p": 500})

    assert response.status_code == 200
    html = response.content.decode()
    assert shown(html, twelve_calls) == []
    assert (
        '<p class="errornote" id="page-past-end">Page 500 is past the last matching call.</p>'
    ) in html


def test_a_page_past_a_counted_list_names_its_last_page(
    staff: Client, twelve_calls: list[str]
) -> None:
    response = staff.get("/admin/calls/call/", {"p": 500})

    assert response.status_code == 200
    html = response.content.decode()
    assert shown(html, twelve_calls) == []
    assert (
        '<p class="errornote" id="page-past-end">Page 500 is past the last matching call: '
        "the list has 6 pages.</p>"
    ) in html


def test_a_page_deeper_than_the_list_pages_asks_for_filters(
    staff: Client, twelve_calls: list[str], monkeypatch
) -> None:
    monkeypatch.setattr("calls.admin_paging.COUNT_CAP", 4)
    monkeypatch.setattr("calls.admin_paging.MAX_PAGED_ROWS", 8)  # pages 1-4

    deepest = staff.get("/admin/calls/call/", {"p": 4}).content.decode()
    deeper = staff.get("/admin/calls/call/", {"p": 5}).content.decode()

    assert shown(deepest, twelve_calls) == twelve_calls[6:8]
    assert shown(deeper, twelve_calls) == []
    assert 'id="page-too-deep"' in deeper


def test_a_page_number_on_a_one_page_list_says_there_is_one_page(
    staff: Client, organization
) -> None:
    call = CallFactory(organization=organization)

    response = staff.get("/admin/calls/call/", {"p": 500})

    assert response.status_code == 200
    html = response.content.decode()
    assert str(call.id)[:8] in html
    assert 'id="page-past-end">There is no page 500' in html


# The date hierarchy at a million calls: each level probes its periods through the
# started_at index instead of grouping every call; it must list what grouping lists.
HIERARCHY_MOMENTS = [
    datetime.datetime(2024, 3, 10, 12, 0, tzinfo=datetime.UTC),
    datetime.datetime(2025, 6, 1, 0, 30, tzinfo=datetime.UTC),
    datetime.datetime(2025, 12, 1, 0, 0, tzinfo=datetime.UTC),
    datetime.datetime(2025, 12, 15, 10, 0, tzinfo=datetime.UTC),
    datetime.datetime(2025, 12, 31, 23, 30, tzinfo=datetime.UTC),  # 2026 in Paris
    datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.UTC),
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize(
    "kind, lookup",
    [
        ("year", {}),
        ("month", {"started_at__year": 2025}),
        ("day", {"started_at__year": 2025, "started_at__month": 12}),
        ("day", {"started_at__year": 2026, "started_at__month": 1}),
    ],
)
def test_the_date_hierarchy_finds_the_periods_grouping_finds(
    organization, zone: str, kind: str, lookup: dict
) -> None:
    for moment in HIERARCHY_MOMENTS:
        CallFactory(organization=organization, completed=True, started_at=moment)
    CallFactory(organization=organization, status=CallStatus.PENDING, started_at=None)

    with timezone.override(zone):
        probed = ProbedDatesQuerySet(model=Call).filter(**lookup).datetimes("started_at", kind)
        grouped = Call.objects.filter(**lookup).datetimes("started_at", kind)
        local = [(d.year, d.month, d.day) for d in grouped]

        assert [(d.year, d.month, d.day) for d in probed] == local
        assert local  # every case has periods to find


def test_the_date_hierarchy_drills_down_to_days(staff: Client, organization) -> None:
    for moment in HIERARCHY_MOMENTS:
        CallFactory(organization=organization, completed=True, started_at=moment)

    years = staff.get("/admin/calls/call/").content.decode()
    days = staff.get(
        "/admin/calls/call/", {"started_at__year": 2025, "started_at__month": 12}
    ).content.decode()

    assert all(f"started_at__year={year}" in years for year in (2024, 2025, 2026))
    linked_days = {int(day) for day in re.findall(r"started_at__day=(\d+)", days)}
    assert linked_days == {1, 15, 31}


def test_the_change_list_costs_constant_queries(
    staff: Client, organization, django_assert_max_num_queries
) -> None:
    CallFactory.create_batch(5, organization=organization, completed=True)
    staff.get("/admin/calls/call/")  # warm the session and content types
    with django_assert_max_num_queries(20) as few:
        staff.get("/admin/calls/call/")
    CallFactory.create_batch(40, organization=organization, completed=True)

    with django_assert_max_num_queries(len(few.captured_queries)):
        assert staff.get("/admin/calls/call/").status_code == 200


def test_the_call_page_reads_the_transcript_as_a_conversation(staff: Client, organization) -> None:
    started = timezone.now() - datetime.timedelta(minutes=3)
    call = CallFactory(
        organization=organization,
        completed=True,
        started_at=started,
        agent_history=["greeter-agent", "meal-agent"],
    )
    TranscriptEntryFactory(
        call=call,
        role="assistant",
        content="Hello John!",
        timestamp=started + datetime.timedelta(seconds=5),
    )
    TranscriptEntryFactory(
        call=call,
        role="assistant",
        agent_name="meal-agent",
        content="Saving your breakfast.",
        timestamp=started + datetime.timedelta(seconds=75),
        tool_call={"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
    )

    response = staff.get(f"/admin/calls/call/{call.id}/change/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "Hello John!" in html
    assert "0:05" in html and "1:15" in html
    assert "save_meal" in html
    assert "&quot;meal_type&quot;: &quot;breakfast&quot;" in html
    assert 'id="agent-timeline"' in html and "meal-agent" in html
    assert f"/admin/calls/call/{call.id}/json/" in html
    assert 'name="_save"' not in html  # read-only: evidence is never edited


def test_the_call_page_marks_a_tool_call_that_failed(staff: Client, organization) -> None:
    """A tool's error reads like its answer in the bubble: the page dropped the line's
    `is_error`, which the API shows."""
    call = CallFactory(organization=organization, completed=True)
    for content, failed in (("save_meal failed (HTTP 500).", True), ('{"saved": true}', False)):
        tool_call = {"name": "save_meal", "arguments": {}, **({"is_error": True} if failed else {})}
        TranscriptEntryFactory(call=call, role="tool", content=content, tool_call=tool_call)

    html = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert html.count('class="vc-tool-failed"') == 1
    failed_line = html[html.index("save_meal failed (HTTP 500).") :]
    assert failed_line.index('class="vc-tool-failed"') < failed_line.index("{&quot;saved")


def test_the_call_page_shows_what_ended_the_call_livekit_and_the_agent_said(
    staff: Client, organization
) -> None:
    """Why a call ended as it did: LiveKit's word (who left, its disconnect reason) and
    the agent's own reports were kept but shown nowhere, so staff read the logs."""
    from calls.models import AgentEvent
    from tests.livekit_samples import send

    call = CallFactory(organization=organization, active=True)
    AgentEvent.objects.create(
        id=uuid.uuid4(),
        call=call,
        type="status",
        payload={"status": "failed", "reason": "agent_error"},
        timestamp=timezone.now(),
    )
    assert send("participant_left", call.id, reason="CLIENT_INITIATED").status_code == 200

    html = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    signals = html[html.index('id="call-signals"') :]
    assert "participant_left" in signals and f"user-{call.id}" in signals
    assert "CLIENT_INITIATED" in signals
    assert "active → completed (user_hangup)" in signals
    assert "failed (agent_error)" in signals


def test_a_call_of_hours_reads_in_hours_minutes_and_seconds(staff: Client, organization) -> None:
    ended = timezone.now()
    started = ended - datetime.timedelta(hours=3, minutes=5, seconds=7)
    call = CallFactory(
        organization=organization, completed=True, started_at=started, ended_at=ended
    )
    TranscriptEntryFactory(
        call=call, content="Still there?", timestamp=started + datetime.timedelta(seconds=7265)
    )

    page = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()
    listed = staff.get("/admin/calls/call/").content.decode()

    assert "3:05:07" in page  # the duration, not "185:07"
    assert "2:01:05 · assistant" in page  # the line's offset, not "121:05"
    assert "3:05:07" in listed


def test_transcript_content_is_escaped(staff: Client, organization) -> None:
    call = CallFactory(organization=organization)
    TranscriptEntryFactory(call=call, content="<script>alert(1)</script>")

    html = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_call_page_costs_constant_queries(
    staff: Client, organization, django_assert_max_num_queries
) -> None:
    call = CallFactory(organization=organization, completed=True)
    TranscriptEntryFactory.create_batch(2, call=call)
    staff.get(f"/admin/calls/call/{call.id}/change/")
    with django_assert_max_num_queries(30) as few:
        staff.get(f"/admin/calls/call/{call.id}/change/")
    TranscriptEntryFactory.create_batch(60, call=call)

    with django_assert_max_num_queries(len(few.captured_queries)):
        assert staff.get(f"/admin/calls/call/{call.id}/change/").status_code == 200


def test_the_call_page_shows_the_analysis_escaped(staff: Client, organization) -> None:
    call = CallFactory(organization=organization, completed=True)
    CallAnalysis.objects.create(
        call=call,
        provider="openai",
        status="completed",
        summary="<b>Ada</b> logged lunch.",
        structured_data={"meal_type": "lunch"},
        success=True,
        model="gpt-4.1-mini",
    )

    html = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert "Post-call analysis" in html
    assert "&lt;b&gt;Ada&lt;/b&gt; logged lunch." in html
    assert "&quot;meal_type&quot;: &quot;lunch&quot;" in html
    assert "&quot;success&quot;: true" in html


@pytest.mark.parametrize(
    ("status", "error"),
    [("failed", "could not upload file: AccessDenied"), ("complete", "Session limit reached")],
)
def test_the_call_page_says_why_a_recording_failed_or_ends_before_the_call(
    staff: Client, organization, status: str, error: str
) -> None:
    """A complete recording cut at LiveKit's limit says so in `error`, as the API shows
    it; the page showed the reason of failed recordings only."""
    call = CallFactory(organization=organization, completed=True)
    RecordingFactory(call=call, status=status, error=error)

    html = staff.get(f"/admin/calls/call/{call.id}/change/").content.decode()

    assert f'<span id="recording-status">{status}</span>' in html
    assert error in html


def test_the_json_link_shows_the_api_body(staff: Client, organization) -> None:
    call = CallFactory(organization=organization, completed=True)

    body = staff.get(f"/admin/calls/call/{call.id}/json/").json()

    assert body["id"] == str(call.id)
    assert body["metrics"]["agent_handoffs"] == 0


def test_calls_cannot_be_added_edited_or_deleted(staff: Client, organization) -> None:
    call = CallFactory(organization=organization)

    assert staff.get("/admin/calls/call/add/").status_code == 403
    assert staff.post(f"/admin/calls/call/{call.id}/delete/").status_code == 403


def test_active_calls_page_lists_live_calls_and_refreshes(staff: Client, organization) -> None:
    live = CallFactory(organization=organization, active=True)
    ended = CallFactory(organization=organization, completed=True)

    html = staff.get("/admin/calls/call/active/").content.decode()

    assert str(live.id)[:8] in html
    assert str(ended.id)[:8] not in html
    assert 'http-equiv="refresh"' in html
    assert "End call" in html


def test_the_active_calls_page_says_when_more_calls_are_open_than_it_lists(
    staff: Client, organization, workflow, monkeypatch
) -> None:
    """It lists the newest of them: with more open (an incident, a campaign), the call
    staff looked for was silently missing, beside a dashboard counting them all."""
    monkeypatch.setattr(CallAdmin, "active_rows", 2)
    now = timezone.now()
    oldest, *newer = [
        CallFactory(
            organization=organization,
            workflow=workflow,
            active=True,
            created_at=now - datetime.timedelta(seconds=10 - i),
        )
        for i in range(3)
    ]

    html = staff.get("/admin/calls/call/active/").content.decode()

    assert all(str(call.id)[:8] in html for call in newer)
    assert str(oldest.id)[:8] not in html
    assert re.search(r'id="active-capped"[^>]*>More than 2 calls are open', html)


def test_the_active_calls_page_lists_every_open_call_it_can(staff: Client, organization) -> None:
    CallFactory.create_batch(2, organization=organization, active=True)

    html = staff.get("/admin/calls/call/active/").content.decode()

    assert "active-capped" not in html


def test_the_dashboard_shows_charts_and_active_calls(staff: Client, organization) -> None:
    CallFactory.create_batch(2, organization=organization, active=True)
    CallFactory(organization=organization, status=CallStatus.CONNECTING)
    CallFactory(organization=organization, completed=True)
    CallFactory(organization=organization, status=CallStatus.FAILED, end_reason="agent_error")

    html = staff.get("/admin/").content.decode()

    assert 'id="dashboard"' in html
    # The big number counts open calls and says so; "active" means in the call.
    assert "<h2>Open calls now</h2>" in html
    assert '<div class="vc-big" id="open-now">3</div>' in html
    assert (
        '<p id="open-now-by-status"><span id="active-now">2</span> active · '
        '<span id="connecting-now">1</span> connecting · '
        '<span id="pending-now">0</span> pending</p>'
    ) in html
    assert "Active now" not in html
    assert html.count("<svg") >= 3
    assert "agent_error" in html


def test_the_dashboard_shows_what_the_caller_feels_per_turn(staff: Client, organization) -> None:
    call = CallFactory(organization=organization, active=True)
    MetricSample.objects.create(
        call=call,
        event_id=uuid.uuid4(),
        eou_latency_ms=512,
        e2e_latency_ms=1234,
        timestamp=timezone.now(),
    )

    html = staff.get("/admin/").content.decode()

    assert "<tr><td>end of utterance</td><td>512 ms</td><td>512 ms</td><td>1</td></tr>" in html
    assert "<tr><td>turn, end to end</td><td>1234 ms</td><td>1234 ms</td><td>1</td></tr>" in html


def test_support_staff_can_read_calls(support: Client, organization) -> None:
    call = CallFactory(organization=organization)

    assert support.get("/admin/calls/call/").status_code == 200
    assert support.get(f"/admin/calls/call/{call.id}/change/").status_code == 200
    assert 'id="dashboard"' in support.get("/admin/").content.decode()


def test_support_staff_cannot_end_calls(support: Client, organization) -> None:
    call = CallFactory(organization=organization, active=True)

    assert support.post(f"/admin/calls/call/{call.id}/end/").status_code == 403
    assert "End call" not in support.get("/admin/calls/call/active/").content.decode()


def test_support_staff_cannot_see_api_keys(support: Client) -> None:
    assert support.get("/admin/accounts/apikey/").status_code == 403


def test_support_staff_get_403_on_provider_key_pages(support: Client, organization) -> None:
    from tests.factories import ProviderKeyFactory

    key = ProviderKeyFactory(organization=organization)

    assert support.get("/admin/providerkeys/providerkey/").status_code == 403
    assert support.get(f"/admin/providerkeys/providerkey/{key.pk}/change/").status_code == 403
    assert support.get("/admin/providerkeys/providerkey/add/").status_code == 403
