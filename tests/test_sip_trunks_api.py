from __future__ import annotations

import logging

import pytest
from django.db import connection

from telephony.models import SipTrunk
from tests.factories import WorkflowFactory

URL = "/api/v1/sip-trunks"
BODY = {
    "name": "Twilio",
    "direction": "outbound",
    "address": "acme.pstn.twilio.com",
    "numbers": ["+14155550100"],
    "auth_username": "acme",
    "auth_password": "s3cret-trunk-pass",
}


def test_creating_a_trunk_creates_it_in_livekit_and_never_shows_the_password(
    api, fake_livekit, caplog
):
    caplog.set_level(logging.DEBUG)
    response = api.post(URL, BODY, format="json")

    assert response.status_code == 201
    trunk = SipTrunk.objects.get()
    (sent,) = fake_livekit.calls("CreateSIPOutboundTrunk")
    assert sent.identity_ok
    marker = sent.body["trunk"].pop("metadata")  # to find it should LiveKit's answer be lost
    assert len(marker) == 32
    assert sent.body["trunk"] == {
        "name": "Twilio",
        "address": "acme.pstn.twilio.com",
        "numbers": ["+14155550100"],
        "authUsername": "acme",
        "authPassword": "s3cret-trunk-pass",
    }
    assert response.json() == {
        "id": str(trunk.id),
        "name": "Twilio",
        "direction": "outbound",
        "address": "acme.pstn.twilio.com",
        "numbers": ["+14155550100"],
        "auth_username": "acme",
        "auth_password_masked": "••••",
        "livekit_trunk_id": trunk.livekit_trunk_id,
        "created_at": response.json()["created_at"],
    }
    assert trunk.livekit_trunk_id.startswith("ST_")
    assert trunk.auth_password == "s3cret-trunk-pass"
    with connection.cursor() as cursor:
        cursor.execute("SELECT auth_password FROM telephony_siptrunk")
        (stored,) = cursor.fetchone()
    assert b"s3cret-trunk-pass" not in bytes(stored)
    assert "s3cret-trunk-pass" not in caplog.text
    assert "s3cret-trunk-pass" not in api.get(URL).content.decode()


@pytest.mark.parametrize(
    "address",
    [
        "acme.pstn.twilio.com:5060",
        "10.0.0.1:65535",
        "sip-1.example.com:1",
        "a" * 63 + ".example.com",
    ],
)
def test_a_carrier_host_with_or_without_a_port_is_a_trunk_address(api, fake_livekit, address):
    response = api.post(URL, {**BODY, "address": address}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["address"] == address


def test_an_inbound_trunk_needs_no_address(api, fake_livekit):
    body = {"name": "In", "direction": "inbound", "numbers": ["+14155550101"]}

    response = api.post(URL, body, format="json")

    assert response.status_code == 201
    assert response.json()["auth_password_masked"] is None
    assert len(fake_livekit.calls("CreateSIPInboundTrunk")) == 1


@pytest.fixture(autouse=True)
def _five_hundreds_as_responses(api):
    # A 5xx is also reported as an exception (for error trackers); the test client
    # would re-raise it instead of returning the response.
    api.raise_request_exception = False


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_trunk_livekit_refuses_is_502_and_nothing_is_stored(
    api, fake_livekit, livekit_gives_up_fast, mode
):
    fake_livekit.fail("CreateSIPOutboundTrunk", mode)

    response = api.post(URL, BODY, format="json")

    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "bad_gateway"
    assert "s3cret" not in response.content.decode()
    assert SipTrunk.objects.count() == 0


def test_livekit_unreachable_is_502_and_nothing_is_stored(api, settings):
    settings.LIVEKIT_URL = "http://127.0.0.1:9"
    settings.LIVEKIT_API_TIMEOUT_SECONDS = 1.0

    assert api.post(URL, BODY, format="json").status_code == 502
    assert SipTrunk.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "attr"),
    [
        ({"address": ""}, "address"),
        ({"numbers": ["4155550100"]}, "numbers.0"),
        ({"numbers": ["+1 415 555 0100"]}, "numbers.0"),
        ({"numbers": []}, "numbers"),
        ({"numbers": ["+14155550100", "+14155550100"]}, "numbers"),
        ({"direction": "sideways"}, "direction"),
        ({"auth_password": "tab\there"}, "auth_password"),
        ({"address": "sip:evil host"}, "address"),
        # Every dial through it would fail: a port SIP cannot use, or no host at all.
        ({"address": "acme.pstn.twilio.com:0"}, "address"),
        ({"address": "acme.pstn.twilio.com:65536"}, "address"),
        ({"address": "acme.pstn.twilio.com:99999"}, "address"),
        ({"address": "acme.pstn.twilio.com:05060"}, "address"),
        ({"address": "-"}, "address"),
        ({"address": "."}, "address"),
        ({"address": "-acme.pstn.twilio.com"}, "address"),
        ({"address": "acme..twilio.com"}, "address"),
        ({"address": "acme.twilio.com."}, "address"),
        ({"address": "a" * 64 + ".twilio.com"}, "address"),
    ],
)
def test_invalid_trunks_are_400_naming_the_field(api, fake_livekit, change, attr):
    response = api.post(URL, {**BODY, **change}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == attr
    assert fake_livekit.requests == []
    assert SipTrunk.objects.count() == 0


def test_trunks_are_listed_and_read_only_within_the_organization(api, outsider_api, fake_livekit):
    trunk_id = api.post(URL, BODY, format="json").json()["id"]

    assert [t["id"] for t in api.get(URL).json()["items"]] == [trunk_id]
    assert api.get(f"{URL}/{trunk_id}").json()["id"] == trunk_id
    assert outsider_api.get(URL).json() == {"items": []}
    assert outsider_api.get(f"{URL}/{trunk_id}").status_code == 404
    assert outsider_api.delete(f"{URL}/{trunk_id}").status_code == 404


def test_deleting_a_trunk_deletes_it_in_livekit(api, fake_livekit):
    trunk_id = api.post(URL, BODY, format="json").json()["id"]
    livekit_id = SipTrunk.objects.get().livekit_trunk_id

    assert api.delete(f"{URL}/{trunk_id}").status_code == 204
    assert fake_livekit.calls("DeleteSIPTrunk")[0].body == {"sipTrunkId": livekit_id}
    assert SipTrunk.objects.count() == 0


def test_a_trunk_livekit_no_longer_has_is_deleted_here_too(api, fake_livekit):
    trunk_id = api.post(URL, BODY, format="json").json()["id"]
    fake_livekit.trunks.clear()

    assert api.delete(f"{URL}/{trunk_id}").status_code == 204
    assert SipTrunk.objects.count() == 0


def test_a_failed_delete_in_livekit_is_502_and_keeps_the_trunk(api, fake_livekit):
    trunk_id = api.post(URL, BODY, format="json").json()["id"]
    fake_livekit.fail("DeleteSIPTrunk", "500")

    assert api.delete(f"{URL}/{trunk_id}").status_code == 502
    assert SipTrunk.objects.count() == 1


def test_a_trunk_whose_password_no_configured_key_opens_is_still_listed_read_and_deleted(
    api, fake_livekit, settings
):
    """A fallback removed before `rotate_provider_keys` ran, or a mistyped
    CRYPTOGRAPHY_KEY: the password lives on in LiveKit, and no page shows it."""
    trunk_id = api.post(URL, BODY, format="json").json()["id"]
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"

    listed = api.get(URL)
    shown = api.get(f"{URL}/{trunk_id}")

    assert [listed.status_code, shown.status_code] == [200, 200]
    assert listed.json()["items"][0]["auth_password_masked"] == "••••"
    assert shown.json()["auth_password_masked"] == "••••"
    assert api.delete(f"{URL}/{trunk_id}").status_code == 204
    assert SipTrunk.objects.count() == 0


def test_trunks_need_a_client_key(anonymous_api, agent_api):
    assert anonymous_api.get(URL).status_code == 401
    assert agent_api.get(URL).status_code == 403


def test_the_schema_never_shows_a_trunk_password(api, fake_livekit):
    """The answer's schema has only the mask; the request's password is write-only, and
    no example carries a password."""
    import yaml
    from django.conf import settings as django_settings

    api.post(URL, BODY, format="json")
    schema = yaml.safe_load((django_settings.BASE_DIR / "openapi.yaml").read_text())
    components = schema["components"]["schemas"]

    assert "auth_password" not in components["SipTrunk"]["properties"]
    assert components["SipTrunk"]["properties"]["auth_password_masked"]["type"] == "string"
    assert components["SipTrunkCreateRequest"]["properties"]["auth_password"]["writeOnly"] is True
    assert BODY["auth_password"] not in (django_settings.BASE_DIR / "openapi.yaml").read_text()
    assert BODY["auth_password"] not in api.get("/api/schema/").content.decode()


def test_the_trunk_list_and_a_trunk_take_a_fixed_number_of_queries(
    api, fake_livekit, django_assert_max_num_queries
):
    for index in range(3):
        api.post(URL, {**BODY, "numbers": [f"+1415555011{index}"]}, format="json")
    trunk = SipTrunk.objects.first()

    with django_assert_max_num_queries(3):  # the key, its organization, the trunks
        assert len(api.get(URL).json()["items"]) == 3
    with django_assert_max_num_queries(3):
        assert api.get(f"{URL}/{trunk.pk}").status_code == 200


def test_deleting_the_trunk_of_the_default_caller_number_clears_it(api, fake_livekit):
    trunk_id = api.post(URL, BODY, format="json").json()["id"]
    api.patch("/api/v1/organization", {"default_caller_number": "+14155550100"}, format="json")

    assert api.delete(f"{URL}/{trunk_id}").status_code == 204

    assert api.get("/api/v1/organization").json()["default_caller_number"] is None


def test_an_organization_has_at_most_20_trunks_and_livekit_is_not_asked_for_more(
    api, organization, fake_livekit
):
    SipTrunk.objects.bulk_create(
        SipTrunk(
            organization=organization,
            name=f"t{index}",
            direction="inbound",
            numbers=[f"+1415555020{index % 10}"],
            livekit_trunk_id=f"ST_cap{index}",
        )
        for index in range(20)
    )

    response = api.post(URL, BODY, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "errors": [
            {
                "code": "limit_reached",
                "detail": "An organization can have at most 20 SIP trunks.",
                "attr": None,
            }
        ],
    }
    assert fake_livekit.calls("CreateSIPOutboundTrunk") == []
    assert SipTrunk.objects.count() == 20


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_a_create_whose_livekit_answer_was_lost_leaves_no_trunk_in_livekit(
    api, fake_livekit, livekit_gives_up_fast, direction
) -> None:
    """LiveKit made the trunk, its answer came too late: 502 "nothing stored", while
    LiveKit kept a trunk with the numbers and credentials, and the retry made another."""
    from tests.test_phone_numbers_api import answered_too_late

    api.raise_request_exception = False
    method = "CreateSIPInboundTrunk" if direction == "inbound" else "CreateSIPOutboundTrunk"
    answered_too_late(fake_livekit, method)
    body = {"name": "Main", "direction": direction, "numbers": ["+14155550123"]}
    if direction == "outbound":
        body["address"] = "sip.example.com"

    assert api.post("/api/v1/sip-trunks", body, format="json").status_code == 502
    delattr(fake_livekit, f"_{method}")
    retry = api.post("/api/v1/sip-trunks", body, format="json")

    assert retry.status_code == 201, retry.content
    assert list(fake_livekit.trunks) == [retry.json()["livekit_trunk_id"]]


def test_an_inbound_trunk_cannot_list_a_number_on_another_organizations_inbound_trunk(
    api, outsider_api, fake_livekit
):
    """A number is unique platform-wide, across every trunk's numbers (DESIGN.md "Phone
    calls", Inbound), and LiveKit itself refuses a second inbound trunk with the same
    number ("Conflicting inbound SIP Trunks": livekit/livekit service/sip.go
    CreateSIPInboundTrunk → sip.ValidateTrunksIter): a 400 naming it, not a 502 that no
    retry cures, and LiveKit is not asked."""
    theirs = {"name": "Theirs", "direction": "inbound", "numbers": ["+14155550140"]}
    assert outsider_api.post(URL, theirs, format="json").status_code == 201
    requests_before = len(fake_livekit.requests)
    ours = {"name": "Ours", "direction": "inbound", "numbers": ["+14155550151", "+14155550140"]}

    response = api.post(URL, ours, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {"code": "invalid", "detail": "This number is not available.", "attr": "numbers.1"}
    ]
    assert len(fake_livekit.requests) == requests_before
    assert [t.name for t in SipTrunk.objects.all()] == ["Theirs"]


def trunk_body(direction: str, number: str) -> dict:
    body = {"name": direction.title(), "direction": direction, "numbers": [number]}
    return {**body, "address": "sip.example.com"} if direction == "outbound" else body


@pytest.mark.parametrize(
    ("theirs", "ours"), [("inbound", "outbound"), ("outbound", "inbound"), ("outbound", "outbound")]
)
def test_a_trunk_cannot_list_a_number_on_another_organizations_trunk(
    api, outsider_api, fake_livekit, theirs, ours
):
    """A number is one organization's, unique across every trunk's numbers (DESIGN.md
    "Phone calls"), whatever the trunks' directions: the first to list it keeps it, and
    nobody learns whose it is. Listed by a second organization, the first could never
    map it to a workflow (phone-numbers answers "not available" from then on)."""
    assert (
        outsider_api.post(URL, trunk_body(theirs, "+14155550140"), format="json").status_code == 201
    )
    requests_before = len(fake_livekit.requests)

    response = api.post(URL, trunk_body(ours, "+14155550140"), format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"] == [
        {"code": "invalid", "detail": "This number is not available.", "attr": "numbers.0"}
    ]
    assert len(fake_livekit.requests) == requests_before
    assert SipTrunk.objects.count() == 1


def test_a_number_of_an_inbound_trunk_stays_its_organizations_to_map(
    api, outsider_api, outsider, fake_livekit
):
    """Another organization listing the number on an outbound trunk later (its caller id)
    does not take it from the organization whose inbound trunk answers it."""
    WorkflowFactory(organization=outsider, slug="support")
    inbound = outsider_api.post(URL, trunk_body("inbound", "+14155550140"), format="json").json()
    api.post(URL, trunk_body("outbound", "+14155550140"), format="json")

    mapped = outsider_api.post(
        "/api/v1/phone-numbers",
        {"number": "+14155550140", "trunk_id": inbound["id"], "workflow_slug": "support"},
        format="json",
    )

    assert mapped.status_code == 201, mapped.content


def test_a_second_inbound_trunk_with_the_same_number_is_400_not_502(api, fake_livekit):
    """LiveKit refuses two inbound trunks answering the same number (neither restricted
    by allowed_numbers): "Conflicting inbound SIP Trunks" (invalid_argument), so it is
    refused here first, naming the number, rather than a 502 a retry never cures."""
    first = {"name": "In", "direction": "inbound", "numbers": ["+14155550140"]}
    assert api.post(URL, first, format="json").status_code == 201

    response = api.post(URL, {**first, "name": "In again"}, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["attr"] == "numbers.0"
    assert SipTrunk.objects.count() == 1
