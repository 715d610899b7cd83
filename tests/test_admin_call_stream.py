"""The admin's call page follows a live call: its staff-only stream (session auth, no
API key in the page), and in headless Chromium the transcript growing while
`simulate_call --pace` plays the call, without a reload."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.test import Client
from playwright.sync_api import Page, expect

from calls.lifecycle import call_transition
from streams.services import staff_sessions_ended
from tests.factories import CallFactory
from tests.stream_server import EventReader, asgi_server, retry_locked
from tests.test_agent_events_api import transcript
from tests.test_call_stream import parse, record

PASSWORD = "correct-horse-battery"


def stream_url(call_id: object) -> str:
    return f"/admin/calls/call/{call_id}/stream/"


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.com", PASSWORD))
    return client


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


def test_the_staff_stream_needs_a_staff_login(client: Client, call) -> None:
    response = client.get(stream_url(call.pk))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_staff_stream_starts_where_the_page_stopped(
    staff: Client, agent_api, call, settings
) -> None:
    record(agent_api, call, transcript(0), transcript(1))
    page = staff.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert f'{stream_url(call.pk)}?after=2"' in page
    assert "Bearer" not in page
    record(agent_api, call, transcript(2))
    settings.STREAMS_END_GRACE_SECONDS = 0
    call_transition(call_id=call.pk, to_status="completed", end_reason="user_hangup")
    response = staff.get(stream_url(call.pk) + "?after=2")
    events = parse(b"".join(response.streaming_content))
    assert [(e["id"], e["event"]) for e in events] == [
        ("3", "transcript"),
        ("4", "status"),
        ("4", "end"),
    ]


def test_a_staff_stream_after_an_event_the_call_never_gave_is_400(
    staff: Client, agent_api, call
) -> None:
    record(agent_api, call, transcript(0))

    assert staff.get(stream_url(call.pk) + "?after=2").status_code == 400
    assert staff.get(stream_url(call.pk) + "?after=1").status_code == 200


def test_an_ended_calls_page_does_not_follow_it(staff: Client, workflow) -> None:
    ended = CallFactory(organization=workflow.organization, workflow=workflow, completed=True)
    page = staff.get(f"/admin/calls/call/{ended.pk}/change/").content.decode()
    assert "EventSource" not in page


def test_a_login_that_ended_or_lost_staff_ends_its_sessions_streams(staff: Client) -> None:
    keep = staff.session.session_key
    demoted = Client()
    demoted.force_login(User.objects.create_user("former", password=PASSWORD, is_staff=True))
    logged_out = Client()
    logged_out.force_login(User.objects.create_user("left", password=PASSWORD, is_staff=True))
    left = logged_out.session.session_key
    logged_out.logout()
    User.objects.filter(username="former").update(is_staff=False)
    keys = {keep, demoted.session.session_key, left, "never-a-session"}
    assert staff_sessions_ended(session_keys=keys) == keys - {keep}


def test_a_login_whose_password_changed_since_ends_its_sessions_streams(staff: Client) -> None:
    """A password change is how a leaked login is ended: the admin answers that session
    with its login page since, while its stream went on."""
    key = staff.session.session_key
    user = User.objects.get(username="admin")
    user.set_password("a-new-password-after-a-leak")
    user.save()

    ended = staff_sessions_ended(session_keys={key})

    assert ended == {key}
    assert staff.get("/admin/").status_code == 302  # (which deletes the session, too)


def test_a_head_request_starts_no_staff_stream(staff: Client, call) -> None:
    """Django answers HEAD with GET's response: a stream nobody reads."""
    assert staff.head(stream_url(call.pk)).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_a_staff_stream_closes_within_a_heartbeat_of_logging_out(settings, workflow) -> None:
    settings.STREAMS_HEARTBEAT_SECONDS = 0.5
    staff = Client()
    staff.force_login(User.objects.create_superuser("admin", "a@example.com", PASSWORD))
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    cookie = {"sessionid": staff.cookies["sessionid"].value}
    with (
        asgi_server() as base,
        httpx.stream("GET", base + stream_url(call.pk), cookies=cookie, timeout=5) as response,
    ):
        assert response.status_code == 200
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        retry_locked(staff.logout)
        assert reader.closed_within(2 * 0.5 + 0.5)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_lines_appear_on_the_call_page_while_the_call_plays(
    page: Page, organization, workflow, settings
) -> None:
    settings.STREAMS_POLL_SECONDS = 0.1
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    call = CallFactory(organization=organization, workflow=workflow)  # connecting
    with asgi_server() as base:
        page.goto(f"{base}/admin/login/?next=/admin/calls/call/{call.pk}/change/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        transcript_box = page.locator("#transcript")
        expect(transcript_box).to_contain_text("No transcript yet.")

        def play() -> None:
            try:
                call_command(
                    "simulate_call",
                    "--org",
                    organization.slug,
                    "--call",
                    str(call.pk),
                    "--pace",
                    "0.4",
                    stdout=open("/dev/null", "w"),
                )
            finally:
                connection.close()

        player = threading.Thread(target=play)
        player.start()
        try:
            expect(transcript_box).to_contain_text("Hello! How are you today?", timeout=15_000)
            # Still playing: more lines come, into the same page.
            expect(transcript_box).not_to_contain_text("Goodbye")
            expect(transcript_box).to_contain_text("save_meal", timeout=15_000)
            expect(transcript_box).to_contain_text("Goodbye!", timeout=15_000)
            expect(page.locator("#live-status")).to_contain_text("ended", timeout=15_000)
        finally:
            player.join(timeout=60)
        assert page.locator("#transcript .vc-line").count() == 10  # each line once
        assert "Bearer" not in page.content()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_call_page_whose_login_ended_says_it_no_longer_follows_the_call(
    page: Page, live_server, workflow
) -> None:
    """The stream closes when the staff login ends, and EventSource's reconnection gets
    the login page: it gives up for good, while the page went on saying "Live"."""
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/calls/call/{call.pk}/change/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    live = page.locator("#live-status")
    expect(live).to_contain_text("Live")

    Session.objects.all().delete()  # the login ends (logged out elsewhere, expired)

    # The WSGI server's stream closes at once; EventSource comes back after `retry`.
    expect(live).to_contain_text("no longer followed", timeout=10_000)
    expect(live).not_to_contain_text("Live")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_call_page_shows_the_status_the_call_ends_in_and_no_end_button(
    page: Page, live_server, workflow, settings
) -> None:
    """The stream said the call ended, but its status still read active above, with
    the button to end it."""
    settings.STREAMS_END_GRACE_SECONDS = 0
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/calls/call/{call.pk}/change/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    badge = page.locator(".field-status_badge .vc-status")
    expect(badge).to_have_text("active")
    expect(page.locator("#end-call-form")).to_be_visible()

    call_transition(call_id=call.pk, to_status="completed", end_reason="user_hangup")

    expect(page.locator("#live-status")).to_contain_text("ended", timeout=10_000)
    expect(badge).to_have_text("completed")
    expect(page.locator("#end-call-form")).to_have_count(0)
