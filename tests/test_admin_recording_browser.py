"""Staff play a call's recording on the admin call page, in headless Chromium: the
`<audio>` element loads the presigned link from the S3 stand-in and decodes the file."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import Page, expect

from accounts.services import SUPPORT_GROUP
from tests.factories import CallFactory, RecordingFactory
from tests.ogg import ogg_opus_silence
from tests.recordings import s3_client
from tests.test_admin_browser import PASSWORD, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page: Page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


@pytest.fixture
def recorded_call(organization, recordings_bucket, s3_server):
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        endpoint=s3_server,
        bucket=recordings_bucket,
    )
    s3_client(s3_server).put_object(
        Bucket=recordings_bucket, Key=recording.object_key, Body=ogg_opus_silence(2.0)
    )
    return recording.call


def test_staff_play_a_calls_recording_from_the_s3_stand_in(
    page: Page, live_server, recorded_call, s3_server, settings
) -> None:
    User.objects.create_superuser("staff", "staff@example.com", PASSWORD)
    log_in(page, live_server, "staff")

    with page.expect_response(lambda r: r.url.startswith(s3_server)) as answer:
        page.goto(f"{live_server.url}/admin/calls/call/{recorded_call.pk}/change/")
        page.locator("#recording-audio").evaluate("audio => audio.load()")

    assert answer.value.status in (200, 206)
    audio = page.locator("#recording-audio")
    assert audio.get_attribute("src").startswith(s3_server)
    page.wait_for_function(
        "() => document.querySelector('#recording-audio').readyState >= 1", timeout=10_000
    )
    duration = audio.evaluate("audio => audio.duration")
    assert 1.9 <= duration <= 2.1
    assert audio.evaluate("audio => audio.error") is None
    assert settings.RECORDINGS_S3_SECRET_ACCESS_KEY not in page.content()
    screenshot(page, "call-recording")


def test_support_staff_do_not_hear_recordings(page: Page, live_server, recorded_call) -> None:
    user = User.objects.create_user("helper", "helper@example.com", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_GROUP))
    log_in(page, live_server, "helper")

    page.goto(f"{live_server.url}/admin/calls/call/{recorded_call.pk}/change/")

    expect(page.locator("#transcript")).to_be_attached()
    assert page.locator("#recording-audio").count() == 0
