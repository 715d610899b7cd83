"""Staff use the console in a real browser: headless Chromium driven by Playwright."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.factories import CallFactory, TranscriptEntryFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct-horse-battery"


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def logged_in(page: Page, live_server) -> Page:
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("staff")
    return page


def test_staff_see_the_dashboard_charts(logged_in: Page, organization) -> None:
    CallFactory.create_batch(3, organization=organization, completed=True)
    CallFactory(organization=organization, active=True)

    logged_in.reload()

    expect(logged_in.locator("#open-now")).to_have_text("1")
    expect(logged_in.locator("#active-now")).to_have_text("1")
    assert logged_in.locator("#dashboard svg.vc-chart").count() >= 3
    screenshot(logged_in, "dashboard")


def test_staff_filter_calls_and_read_a_transcript(
    logged_in: Page, live_server, organization
) -> None:
    started = timezone.now() - datetime.timedelta(minutes=2)
    call = CallFactory(
        organization=organization,
        completed=True,
        user_id="user-123",
        started_at=started,
        agent_history=["greeter-agent", "meal-agent", "feedback-agent"],
    )
    CallFactory(organization=organization, active=True, user_id="someone-else")
    lines = [
        ("system", "Call started", None, 0),
        ("assistant", "Hello John! How are you today?", None, 2),
        ("user", "I'm doing well, thanks!", None, 6),
        (
            "assistant",
            "Great! What did you have for breakfast?",
            {"name": "save_meal", "arguments": {"meal_type": "breakfast"}},
            11,
        ),
    ]
    for role, content, tool_call, offset in lines:
        TranscriptEntryFactory(
            call=call,
            role=role,
            content=content,
            tool_call=tool_call,
            agent_name="meal-agent" if tool_call else "greeter-agent",
            timestamp=started + datetime.timedelta(seconds=offset),
        )

    page = logged_in
    page.goto(f"{live_server.url}/admin/calls/call/")
    page.click("#changelist-filter >> text=Completed")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list")).to_contain_text("user-123")
    page.click(f"#result_list >> text={str(call.id)[:8]}")

    transcript = page.locator("#transcript")
    expect(transcript).to_contain_text("Hello John! How are you today?")
    expect(transcript).to_contain_text("save_meal")
    expect(transcript).to_contain_text('"meal_type": "breakfast"')
    expect(page.locator("#agent-timeline")).to_contain_text("feedback-agent")
    screenshot(page, "call-transcript")


def test_a_provider_key_created_in_the_console_is_never_shown_again(
    logged_in: Page, live_server, organization
) -> None:
    plaintext = "dg_live_Browser0123456789secret"
    page = logged_in
    page.goto(f"{live_server.url}/admin/providerkeys/providerkey/add/")
    page.select_option("#id_organization", label=organization.slug)
    page.select_option("#id_provider_type", "stt")
    page.select_option("#id_provider_name", "deepgram")
    page.fill("#id_api_key", plaintext)
    page.click("input[name=_save]")

    expect(page.locator("#result_list")).to_contain_text("••••cret")
    pages = [page.content()]
    page.click("#result_list tbody tr a")
    pages.append(page.content())
    page.goto(f"{live_server.url}/admin/providerkeys/providerkey/?q=deepgram")
    pages.append(page.content())
    page.goto(f"{live_server.url}/admin/")
    pages.append(page.content())
    screenshot(page, "provider-key-masked")

    for html in pages:
        assert plaintext not in html
        assert "Browser0123" not in html


def test_staff_end_an_active_call_from_the_console(
    logged_in: Page, live_server, organization, fake_livekit
) -> None:
    call = CallFactory(organization=organization, active=True, user_id="user-live")
    fake_livekit.add_room(f"call-{call.id}", [f"user-{call.id}"])

    page = logged_in
    page.goto(f"{live_server.url}/admin/calls/call/active/")
    expect(page.locator("#active-calls")).to_contain_text("user-live")
    page.click("#active-calls input.end-call")

    expect(page.locator("ul.messagelist")).to_contain_text("is completed")
    expect(page.locator("#active-calls")).not_to_contain_text("user-live")
    screenshot(page, "active-calls-after-end")
    call.refresh_from_db()
    assert (call.status, call.end_reason) == ("completed", "api_request")
    assert [r.body["room"] for r in fake_livekit.calls("DeleteRoom")] == [f"call-{call.id}"]


def test_staff_end_a_call_from_its_own_page(
    logged_in: Page, live_server, organization, fake_livekit
) -> None:
    """The button's form sat inside the page's own (read-only) form: browsers drop a
    form nested in another, so the button posted the call's change form, a 403."""
    call = CallFactory(organization=organization, active=True, user_id="user-live")
    fake_livekit.add_room(f"call-{call.id}", [f"user-{call.id}"])

    page = logged_in
    page.goto(f"{live_server.url}/admin/calls/call/{call.id}/change/")
    page.click("#end-call-form input[type=submit]")

    expect(page.locator("ul.messagelist")).to_contain_text("is completed")
    expect(page.locator(".field-status_badge .vc-status")).to_have_text("completed")
    expect(page.locator("#end-call-form")).to_have_count(0)
    call.refresh_from_db()
    assert (call.status, call.end_reason) == ("completed", "api_request")
