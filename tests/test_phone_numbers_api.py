"""`/api/v1/phone-numbers`: an organization's inbound numbers mapped to workflows,
unique platform-wide, `unverified` until staff verify them (tests/test_admin_telephony.py),
their LiveKit dispatch rule deleted with them (DESIGN.md "Phone calls", Inbound)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from telephony.models import PhoneNumber, PhoneNumberStatus, SipTrunk
from telephony.services import phone_number_verify, sip_trunk_create
from tests.factories import PhoneNumberFactory, WorkflowFactory
from tests.phone import INBOUND_NUMBER, SECOND_INBOUND_NUMBER, inbound_trunk, phone_ready
from voicecalls.livekit import LiveKitError

URL = "/api/v1/phone-numbers"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _five_hundreds_as_responses(api):
    api.raise_request_exception = False


@pytest.fixture
def trunk(organization, fake_livekit) -> SipTrunk:
    return inbound_trunk(organization)


def body(trunk: SipTrunk, **changes: object) -> dict:
    return {
        "number": INBOUND_NUMBER,
        "trunk_id": str(trunk.id),
        "workflow_slug": "daily-call",
        **changes,
    }


def test_a_new_number_is_unverified_and_nothing_reaches_livekit(api, workflow, trunk, fake_livekit):
    requests_before = len(fake_livekit.requests)

    response = api.post(URL, body(trunk), format="json")

    assert response.status_code == 201, response.content
    number = PhoneNumber.objects.get()
    assert response.json() == {
        "id": str(number.id),
        "number": INBOUND_NUMBER,
        "trunk_id": str(trunk.id),
        "workflow_slug": "daily-call",
        "status": "unverified",
        "livekit_dispatch_rule_id": None,
        "verified_at": None,
        "created_at": response.json()["created_at"],
    }
    assert (number.organization, number.workflow) == (trunk.organization, workflow)
    assert len(fake_livekit.requests) == requests_before
    assert fake_livekit.dispatch_rules == {}


@pytest.mark.parametrize(
    ("change", "attr"),
    [
        ({"number": "4155550140"}, "number"),
        ({"number": "+1415"}, "number"),
        ({"number": "+1 415 555 0140"}, "number"),
        ({"number": None}, "number"),
        ({"trunk_id": "not-a-uuid"}, "trunk_id"),
        ({"trunk_id": str(uuid.uuid4())}, "trunk_id"),
        ({"workflow_slug": "no-such-workflow"}, "workflow_slug"),
        ({"workflow_slug": "not a slug"}, "workflow_slug"),
        ({"number": "+14155550199"}, "number"),  # not one of the trunk's numbers
    ],
)
def test_invalid_numbers_are_400_naming_the_field(api, workflow, trunk, change, attr):
    response = api.post(URL, body(trunk, **change), format="json")

    assert response.status_code == 400, response.content
    assert [error["attr"] for error in response.json()["errors"]] == [attr]
    assert PhoneNumber.objects.count() == 0


@pytest.mark.parametrize("field", ["number", "trunk_id", "workflow_slug"])
def test_each_field_is_required(api, workflow, trunk, field):
    data = body(trunk)
    del data[field]

    response = api.post(URL, data, format="json")

    assert response.status_code == 400
    assert [error["attr"] for error in response.json()["errors"]] == [field]


def test_an_outbound_trunk_cannot_take_calls(api, organization, workflow, fake_livekit):
    outbound = phone_ready(organization)

    response = api.post(URL, body(outbound, number=outbound.numbers[0]), format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "trunk_id"
    assert PhoneNumber.objects.count() == 0


def test_another_organizations_trunk_is_400_like_an_unknown_one(
    api, workflow, outsider, fake_livekit
):
    theirs = inbound_trunk(outsider, numbers=("+14155550150",))

    response = api.post(URL, body(theirs, number="+14155550150"), format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "trunk_id"


def test_a_deleted_workflow_cannot_take_calls(api, workflow, trunk):
    workflow.deleted_at = workflow.created_at
    workflow.save(update_fields=["deleted_at"])

    response = api.post(URL, body(trunk), format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "workflow_slug"


def legacy_inbound_trunk(organization, number: str) -> SipTrunk:
    """An inbound trunk listing `number` that another inbound trunk lists too: LiveKit
    refuses to make such a trunk ("Conflicting inbound SIP Trunks"), and so does
    sip_trunk_create; rows from before it did may remain."""
    return SipTrunk.objects.create(
        organization=organization,
        name="legacy",
        direction="inbound",
        numbers=[number],
        livekit_trunk_id=f"ST_legacy{uuid.uuid4().hex[:8]}",
    )


def test_a_number_another_organization_mapped_is_not_available_and_says_nothing_of_whose(
    api, workflow, trunk, outsider, fake_livekit
):
    PhoneNumberFactory(trunk=legacy_inbound_trunk(outsider, INBOUND_NUMBER))

    response = api.post(URL, body(trunk), format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"code": "invalid", "detail": "This number is not available.", "attr": "number"}
    ]
    assert PhoneNumber.objects.filter(organization=trunk.organization).count() == 0


def test_a_trunk_cannot_list_a_number_another_organization_mapped(
    api, organization, outsider, fake_livekit
):
    PhoneNumberFactory(trunk=inbound_trunk(outsider, numbers=(INBOUND_NUMBER,)))
    requests_before = len(fake_livekit.requests)

    response = api.post(
        "/api/v1/sip-trunks",
        {"name": "In", "direction": "inbound", "numbers": ["+14155550151", INBOUND_NUMBER]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"code": "invalid", "detail": "This number is not available.", "attr": "numbers.1"}
    ]
    assert len(fake_livekit.requests) == requests_before
    assert SipTrunk.objects.filter(organization=organization).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_trunk_listing_a_number_mapped_while_livekit_created_the_trunk_is_refused(
    api, outsider_api, organization, workflow, fake_livekit
):
    """The number is checked again once LiveKit answered, under the numbers' lock."""
    create_in_livekit = fake_livekit._CreateSIPOutboundTrunk
    mapped: list[int] = []
    trunks: list[SipTrunk] = []

    def create_while_the_number_is_mapped(message, response_class):
        trunks.append(inbound_trunk(organization))
        mapped.append(api.post(URL, body(trunks[0]), format="json").status_code)
        return create_in_livekit(message, response_class)

    fake_livekit._CreateSIPOutboundTrunk = create_while_the_number_is_mapped

    theirs = outsider_api.post(
        "/api/v1/sip-trunks",
        {
            "name": "Out",
            "direction": "outbound",
            "address": "sip.example.com",
            "numbers": [INBOUND_NUMBER],
        },
        format="json",
    )

    assert mapped == [201]
    assert theirs.status_code == 400
    assert theirs.json()["errors"][0]["attr"] == "numbers.0"
    (ours,) = trunks
    assert [t.livekit_trunk_id for t in SipTrunk.objects.all()] == [ours.livekit_trunk_id]
    assert list(fake_livekit.trunks) == [ours.livekit_trunk_id]


def test_a_number_on_another_organizations_trunk_is_not_available(
    api, workflow, trunk, outsider, fake_livekit
):
    legacy_inbound_trunk(outsider, INBOUND_NUMBER)

    response = api.post(URL, body(trunk), format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["detail"] == "This number is not available."
    assert PhoneNumber.objects.count() == 0


def test_the_same_number_twice_is_400(api, workflow, trunk):
    assert api.post(URL, body(trunk), format="json").status_code == 201

    response = api.post(URL, body(trunk), format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "number"


def test_numbers_are_listed_newest_first_in_constant_queries(
    api, workflow, trunk, django_assert_num_queries
):
    first = PhoneNumberFactory(trunk=trunk, number=INBOUND_NUMBER, workflow=workflow)
    other = WorkflowFactory(organization=trunk.organization, slug="support")
    second = PhoneNumberFactory(trunk=trunk, number=SECOND_INBOUND_NUMBER, workflow=other)

    with django_assert_num_queries(2):  # the key, the numbers
        response = api.get(URL)

    assert response.status_code == 200
    assert [(n["id"], n["workflow_slug"]) for n in response.json()["items"]] == [
        (str(second.id), "support"),
        (str(first.id), "daily-call"),
    ]


def test_a_number_is_read_by_id(api, workflow, trunk, django_assert_num_queries):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    with django_assert_num_queries(2):
        response = api.get(f"{URL}/{number.id}")

    assert response.status_code == 200
    assert response.json()["number"] == INBOUND_NUMBER
    assert response.json()["status"] == "unverified"


def test_another_organizations_numbers_are_not_found(outsider_api, workflow, trunk):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    assert outsider_api.get(URL).json() == {"items": []}
    assert outsider_api.get(f"{URL}/{number.id}").status_code == 404
    assert outsider_api.delete(f"{URL}/{number.id}").status_code == 404
    assert PhoneNumber.objects.count() == 1


def test_deleting_an_unverified_number_asks_nothing_of_livekit(api, workflow, trunk, fake_livekit):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    assert api.delete(f"{URL}/{number.id}").status_code == 204

    assert fake_livekit.calls("DeleteSIPDispatchRule") == []
    assert PhoneNumber.objects.count() == 0


def test_deleting_a_verified_number_deletes_its_dispatch_rule(api, workflow, trunk, fake_livekit):
    number = phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))

    assert api.delete(f"{URL}/{number.id}").status_code == 204

    (sent,) = fake_livekit.calls("DeleteSIPDispatchRule")
    assert sent.body == {"sipDispatchRuleId": number.livekit_dispatch_rule_id}
    assert sent.identity_ok
    assert fake_livekit.dispatch_rules == {}
    assert PhoneNumber.objects.count() == 0


def test_numbers_of_a_trunk_whose_password_no_configured_key_opens_still_work(
    api, organization, workflow, fake_livekit, settings
):
    """A fallback removed before `rotate_provider_keys` ran, or a mistyped
    CRYPTOGRAPHY_KEY: the trunk's password lives on in LiveKit, nothing here reads it."""
    trunk = sip_trunk_create(
        organization=organization,
        name="carrier",
        direction="inbound",
        numbers=[INBOUND_NUMBER],
        auth_username="acme",
        auth_password="trunk-secret-pw",
    )
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"

    listed = api.get(URL)
    phone_number_verify(phone_number=number)

    assert listed.status_code == 200
    assert [item["trunk_id"] for item in listed.json()["items"]] == [str(trunk.id)]
    assert api.delete(f"{URL}/{number.id}").status_code == 204


def test_a_rule_livekit_no_longer_has_is_deleted_here_too(api, workflow, trunk, fake_livekit):
    number = phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    fake_livekit.dispatch_rules.clear()

    assert api.delete(f"{URL}/{number.id}").status_code == 204
    assert PhoneNumber.objects.count() == 0


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_a_delete_livekit_fails_is_502_and_the_number_is_kept(
    api, workflow, trunk, fake_livekit, livekit_gives_up_fast, mode
):
    number = phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    fake_livekit.fail("DeleteSIPDispatchRule", mode)

    response = api.delete(f"{URL}/{number.id}")

    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "bad_gateway"
    number.refresh_from_db()
    assert number.status == PhoneNumberStatus.VERIFIED
    assert number.livekit_dispatch_rule_id in fake_livekit.dispatch_rules


def test_a_trunk_with_numbers_is_not_deleted(api, workflow, trunk, fake_livekit):
    PhoneNumberFactory(trunk=trunk, workflow=workflow)

    response = api.delete(f"/api/v1/sip-trunks/{trunk.id}")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "trunk_in_use"
    assert fake_livekit.calls("DeleteSIPTrunk") == []
    assert SipTrunk.objects.filter(pk=trunk.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_number_added_while_its_trunk_is_deleted_waits_and_finds_no_trunk(
    api, workflow, trunk, fake_livekit, client_key
):
    """Without the trunk's lock the number went in during LiveKit's delete, and the
    trunk's row delete then failed on it: a 500, the trunk gone in LiveKit only."""
    delete_in_livekit = fake_livekit._DeleteSIPTrunk
    added: list[int] = []
    adding = threading.Thread(target=_number_add, args=(client_key, trunk, added))

    def delete_while_a_number_is_added(message, response_class):
        adding.start()
        time.sleep(0.5)  # the number's request reaches the trunk's lock meanwhile
        return delete_in_livekit(message, response_class)

    fake_livekit._DeleteSIPTrunk = delete_while_a_number_is_added

    deleted = api.delete(f"/api/v1/sip-trunks/{trunk.id}")
    adding.join()

    assert (deleted.status_code, added) == (204, [400])
    assert not SipTrunk.objects.filter(pk=trunk.pk).exists()
    assert not PhoneNumber.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_number_added_while_its_workflow_is_deleted_waits_and_finds_no_workflow(
    workflow, trunk, fake_livekit, client_key
):
    """Without the workflow's lock the number went in beside the delete, pointing at a
    deleted workflow: its callers unanswered."""
    from django.db import transaction

    from workflows.services import workflow_delete

    added: list[int] = []
    adding = threading.Thread(target=_number_add, args=(client_key, trunk, added))
    with transaction.atomic():
        workflow_delete(workflow=workflow)
        adding.start()
        time.sleep(0.5)  # the number's request reaches the workflow's lock meanwhile
    adding.join()

    assert added == [400]
    assert not PhoneNumber.objects.exists()


def _number_add(client_key: str, trunk: SipTrunk, answers: list[int]) -> None:
    from django.db import connection

    from tests.conftest import bearer_client

    try:
        answers.append(bearer_client(client_key).post(URL, body(trunk), format="json").status_code)
    finally:
        connection.close()


def test_a_number_is_pointed_at_another_workflow(api, workflow, trunk, fake_livekit):
    number = phone_number_verify(phone_number=PhoneNumberFactory(trunk=trunk, workflow=workflow))
    WorkflowFactory(organization=trunk.organization, slug="support")
    requests_before = len(fake_livekit.requests)

    response = api.patch(f"{URL}/{number.id}", {"workflow_slug": "support"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "id": str(number.id),
        "number": INBOUND_NUMBER,
        "trunk_id": str(trunk.id),
        "workflow_slug": "support",
        "status": "verified",
        "livekit_dispatch_rule_id": number.livekit_dispatch_rule_id,
        "verified_at": response.json()["verified_at"],
        "created_at": response.json()["created_at"],
    }
    assert len(fake_livekit.requests) == requests_before


@pytest.mark.parametrize(
    ("data", "attr"),
    [
        ({"workflow_slug": "no-such-workflow"}, "workflow_slug"),
        ({"workflow_slug": "daily-call", "number": SECOND_INBOUND_NUMBER}, "number"),
        ({"workflow_slug": "daily-call", "trunk_id": str(uuid.uuid4())}, "trunk_id"),
    ],
)
def test_invalid_updates_are_400_naming_the_field_and_change_nothing(
    api, workflow, trunk, data, attr
):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    response = api.patch(f"{URL}/{number.id}", data, format="json")

    assert response.status_code == 400
    assert [error["attr"] for error in response.json()["errors"]] == [attr]
    number.refresh_from_db()
    assert (number.number, number.workflow_id) == (INBOUND_NUMBER, workflow.id)


def test_a_number_read_and_sent_back_whole_moves_only_to_the_workflow_changed(api, workflow, trunk):
    """A client that edits what it read (GET, change the workflow, PATCH it all) was
    refused: the number and trunk it sent back unchanged were read as a change."""
    WorkflowFactory(organization=workflow.organization, slug="support")
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)
    read = api.get(f"{URL}/{number.id}").json()

    response = api.patch(
        f"{URL}/{number.id}",
        {**read, "trunk_id": read["trunk_id"].upper(), "workflow_slug": "support"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json() == {**read, "workflow_slug": "support"}


def test_an_empty_update_changes_nothing(api, workflow, trunk):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    response = api.patch(f"{URL}/{number.id}", {}, format="json")

    assert response.status_code == 200
    assert response.json()["workflow_slug"] == "daily-call"


def test_another_organizations_number_cannot_be_updated(
    outsider_api, outsider_workflow, workflow, trunk
):
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)

    response = outsider_api.patch(f"{URL}/{number.id}", {"workflow_slug": "daily-call"})

    assert response.status_code == 404
    number.refresh_from_db()
    assert number.workflow_id == workflow.id


def answered_too_late(fake_livekit, method: str) -> None:
    """LiveKit does the work, and its answer comes after our request timed out."""
    original = getattr(fake_livekit, f"_{method}")

    def late(message, response_class):
        answer = original(message, response_class)
        time.sleep(1.5)  # beyond the 1 s of livekit_gives_up_fast
        return answer

    setattr(fake_livekit, f"_{method}", late)


def test_a_verify_whose_livekit_answer_was_lost_verifies_the_next_time(
    workflow, trunk, fake_livekit, livekit_gives_up_fast
) -> None:
    """LiveKit refuses a second rule for the number: the one its lost answer made was
    forgotten, and the number could never be verified (nor that rule deleted)."""
    number = PhoneNumberFactory(trunk=trunk, workflow=workflow)
    answered_too_late(fake_livekit, "CreateSIPDispatchRule")
    with pytest.raises(LiveKitError):
        phone_number_verify(phone_number=number)
    del fake_livekit._CreateSIPDispatchRule  # LiveKit answers in time again

    verified = phone_number_verify(phone_number=number)

    assert verified.status == PhoneNumberStatus.VERIFIED
    assert list(fake_livekit.dispatch_rules) == [verified.livekit_dispatch_rule_id]


def test_deleting_a_number_whose_verify_answer_was_lost_deletes_the_rule_livekit_made(
    api, organization, workflow, fake_livekit, livekit_gives_up_fast
):
    """The number had no rule id, so its deletion asked LiveKit nothing: the rule kept
    routing callers, and the number added again could never be verified (LiveKit
    refuses a second rule for the same number on the same trunk)."""
    trunk = inbound_trunk(organization)
    body = {"number": INBOUND_NUMBER, "trunk_id": str(trunk.id), "workflow_slug": "daily-call"}
    created = api.post("/api/v1/phone-numbers", body, format="json")
    answered_too_late(fake_livekit, "CreateSIPDispatchRule")
    with pytest.raises(LiveKitError):
        phone_number_verify(phone_number=PhoneNumber.objects.get())
    del fake_livekit._CreateSIPDispatchRule  # LiveKit answers in time again

    assert api.delete(f"/api/v1/phone-numbers/{created.json()['id']}").status_code == 204
    assert list(fake_livekit.dispatch_rules) == []
    assert api.post("/api/v1/phone-numbers", body, format="json").status_code == 201
    verified = phone_number_verify(phone_number=PhoneNumber.objects.get())

    assert verified.status == PhoneNumberStatus.VERIFIED
    assert list(fake_livekit.dispatch_rules) == [verified.livekit_dispatch_rule_id]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_number_deleted_while_it_is_pointed_at_another_workflow_is_404_not_500(
    api, organization, workflow, fake_livekit
):
    """The save of a row deleted meanwhile raised "did not affect any rows": a 500. (The
    DELETE runs from the database driver's hook, just before the PATCH's UPDATE.)"""
    from django.db import connection

    WorkflowFactory(organization=organization, slug="other")
    number = PhoneNumberFactory(trunk=inbound_trunk(organization), workflow=workflow)
    api.raise_request_exception = False

    def delete_elsewhere() -> None:
        from django.db import connection as own

        try:
            PhoneNumber.objects.filter(pk=number.pk).delete()
        finally:
            own.close()

    def before_update(execute, sql, params, many, context):
        if sql.startswith('UPDATE "telephony_phonenumber"'):
            thread = threading.Thread(target=delete_elsewhere)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(before_update):
        response = api.patch(
            f"/api/v1/phone-numbers/{number.id}", {"workflow_slug": "other"}, format="json"
        )

    assert response.status_code == 404, response.content
