"""A call's cost: the agent's usage (per provider and model) and the call's minutes,
priced by the table (billing/prices.csv and the organization's overrides), shown on
the call once it ended."""

from __future__ import annotations

import datetime
import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import CallCost, PriceOverride
from billing.services import MAX_USAGE_SESSIONS
from calls.models import AgentEvent, CallStatus
from tests.factories import CallFactory

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 1, 17, 10, 30, tzinfo=datetime.UTC)
STT = {"component": "stt", "provider": "deepgram", "model": "nova-3", "audio_seconds": 120}
LLM = {
    "component": "llm",
    "provider": "openai",
    "model": "gpt-4.1-mini",
    "prompt_tokens": 5000,
    "completion_tokens": 500,
    "cached_tokens": 1000,
}
TTS = {"component": "tts", "provider": "cartesia", "model": "sonic-2", "characters": 1000}
MINUTE = datetime.timedelta(minutes=1)


def usage(*items: dict, at: datetime.datetime = T0, session: str | None = None) -> dict:
    event = {
        "id": str(uuid.uuid4()),
        "type": "usage",
        "timestamp": at.isoformat(),
        "usage": list(items),
    }
    return event if session is None else event | {"session": session}


def line(component: str, provider: str, model: str, *numbers: str) -> dict:
    """A line of what the call itself used (`phase` `call`; the analysis's: its own)."""
    quantity, unit, unit_price, amount = numbers
    return {
        "component": component,
        "provider": provider,
        "model": model,
        "quantity": quantity,
        "unit": unit,
        "unit_price_usd": unit_price,
        "amount_usd": amount,
        "phase": "call",
    }


def report(agent_api, call, *events: dict):
    return agent_api.post(
        f"/api/v1/agent/calls/{call.id}/events", {"events": list(events)}, format="json"
    )


@pytest.fixture
def ended_call(workflow):
    """A three-minute call that ended (usage arrives after the end: the agent's last flush)."""
    return CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=3),
    )


def test_usage_reported_after_the_end_prices_the_call_line_by_line(
    api, agent_api, ended_call
) -> None:
    response = report(agent_api, ended_call, usage(STT, LLM, TTS))

    assert response.status_code == 200, response.data
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"] == {
        "total_usd": "0.049400",
        "breakdown": [
            line("stt", "deepgram", "nova-3", "2", "minute", "0.0077", "0.015400"),
            line("llm_prompt", "openai", "gpt-4.1-mini", "4000", "token", "0.0000004", "0.001600"),
            line("llm_cached", "openai", "gpt-4.1-mini", "1000", "token", "0.0000001", "0.000100"),
            line(
                "llm_completion", "openai", "gpt-4.1-mini", "500", "token", "0.0000016", "0.000800"
            ),
            line("tts", "cartesia", "sonic-2", "1000", "character", "0.00003", "0.030000"),
            line("room", "livekit", "room", "3", "minute", "0.0005", "0.001500"),
        ],
        "complete": True,
    }


def test_a_call_not_yet_ended_has_no_cost_even_with_usage(api, agent_api, workflow) -> None:
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)

    report(agent_api, call, usage(STT))

    assert api.get(f"/api/v1/calls/{call.id}").json()["cost"] is None
    assert CallCost.objects.get(call=call).usage == [STT]


def test_a_call_ended_by_the_agent_is_priced_with_its_minutes_at_the_end(
    api, agent_api, workflow
) -> None:
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    report(agent_api, call, usage(STT))

    ended = {"id": str(uuid.uuid4()), "type": "status", "timestamp": T0.isoformat()}
    report(agent_api, call, {**ended, "status": "completed"})

    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED
    cost = api.get(f"/api/v1/calls/{call.id}").json()["cost"]
    # Exact (a float's seconds were a hair off a rounding tie now and then).
    duration = call.ended_at - call.started_at
    minutes = Decimal(duration // datetime.timedelta(microseconds=1)) / 60_000_000
    room = Decimal(cost["breakdown"][1]["amount_usd"])
    assert [item["component"] for item in cost["breakdown"]] == ["stt", "room"]
    assert cost["breakdown"][1]["quantity"] == str(
        minutes.quantize(Decimal("0.000001")).normalize()
    )
    assert Decimal(cost["total_usd"]) == Decimal("0.015400") + room


def test_a_call_that_never_started_costs_nothing_and_has_no_lines(
    api, workflow, fake_livekit
) -> None:
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    api.post(f"/api/v1/calls/{call.id}/end")

    assert api.get(f"/api/v1/calls/{call.id}").json()["cost"] == {
        "total_usd": "0.000000",
        "breakdown": [],
        "complete": True,
    }


def test_an_older_or_replayed_usage_report_changes_nothing(api, agent_api, ended_call) -> None:
    newer = usage(STT, at=T0 + datetime.timedelta(seconds=10))
    report(agent_api, ended_call, newer)
    priced = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]

    older = usage({**STT, "audio_seconds": 30}, at=T0)
    assert report(agent_api, ended_call, older).json() == {"accepted": 1, "duplicates": 0}
    assert report(agent_api, ended_call, newer).json() == {"accepted": 0, "duplicates": 1}

    assert api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"] == priced
    assert priced["breakdown"][0]["quantity"] == "2"


def test_the_newest_report_of_a_batch_wins_whatever_its_place(api, agent_api, ended_call) -> None:
    later = usage({**STT, "audio_seconds": 180}, at=T0 + datetime.timedelta(seconds=20))
    earlier = usage(STT, at=T0)

    report(agent_api, ended_call, later, earlier)

    cost = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]
    assert cost["breakdown"][0]["quantity"] == "3"


def test_a_report_holding_more_is_kept_though_the_agents_clock_stepped_back(
    agent_api, ended_call
) -> None:
    # The agent host's clock stepped back 30 s mid-call: its totals still only grew.
    report(agent_api, ended_call, usage({**STT, "audio_seconds": 60}, LLM, at=T0 + MINUTE))
    report(agent_api, ended_call, usage(STT, LLM, TTS, at=T0 + MINUTE / 2))

    cost = CallCost.objects.get(call=ended_call)
    assert cost.usage == [STT, LLM, TTS]
    assert cost.usage_at == T0 + MINUTE


def test_in_one_batch_the_report_holding_more_wins_whatever_its_stamp(
    agent_api, ended_call
) -> None:
    report(
        agent_api,
        ended_call,
        usage({**STT, "audio_seconds": 60}, at=T0 + MINUTE),
        usage(STT, at=T0 + MINUTE / 2),
    )

    assert CallCost.objects.get(call=ended_call).usage == [STT]


def test_a_report_holding_less_of_one_model_and_more_of_another_is_ordered_by_its_stamp(
    agent_api, ended_call
) -> None:
    # Never from one agent run (its totals only grow): the stamps are all there is.
    report(agent_api, ended_call, usage(STT, at=T0 + MINUTE))
    report(agent_api, ended_call, usage({**STT, "audio_seconds": 60}, TTS, at=T0))

    assert CallCost.objects.get(call=ended_call).usage == [STT]


def test_a_re_dispatched_agents_usage_adds_to_what_the_first_run_reported(
    api, agent_api, ended_call
) -> None:
    # The first worker died after two minutes of audio; the next counts from zero.
    first = usage(STT, LLM, at=T0 + datetime.timedelta(seconds=50), session="run-1")
    second = usage({**STT, "audio_seconds": 60}, TTS, at=T0, session="run-2")

    report(agent_api, ended_call, first)
    report(agent_api, ended_call, second)

    cost = CallCost.objects.get(call=ended_call)
    assert cost.usage == [{**STT, "audio_seconds": 180}, LLM, TTS]
    assert cost.usage_at == T0 + datetime.timedelta(seconds=50)
    breakdown = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]["breakdown"]
    assert breakdown[0]["quantity"] == "3"


def test_each_sessions_newest_report_is_kept_whatever_the_order(agent_api, ended_call) -> None:
    later = T0 + datetime.timedelta(seconds=20)
    report(
        agent_api,
        ended_call,
        usage({**STT, "audio_seconds": 90}, at=later, session="run-2"),
        usage({**STT, "audio_seconds": 30}, at=T0, session="run-2"),
        usage({**STT, "audio_seconds": 12}, at=later, session="run-1"),
    )
    report(agent_api, ended_call, usage({**STT, "audio_seconds": 6}, at=T0, session="run-1"))

    assert CallCost.objects.get(call=ended_call).usage == [{**STT, "audio_seconds": 102}]


def test_usage_kept_before_sessions_were_named_counts_as_one_session(agent_api, ended_call) -> None:
    report(agent_api, ended_call, usage(STT, at=T0))
    CallCost.objects.filter(call=ended_call).update(usage_sessions={})  # a row from before

    report(agent_api, ended_call, usage({**STT, "audio_seconds": 30}, at=T0, session="run-2"))
    report(agent_api, ended_call, usage({**STT, "audio_seconds": 1}, at=T0))  # not newer

    assert CallCost.objects.get(call=ended_call).usage == [{**STT, "audio_seconds": 150}]


def test_the_release_before_sessions_still_prices_calls_while_the_migration_has_run(
    agent_api, ended_call
) -> None:
    """README "Upgrading": `migrate` runs while the previous release serves; its insert
    names no `usage_sessions`, and the call's end (which prices it) must not fail on it."""
    ids = (ended_call.pk, ended_call.organization_id, ended_call.workflow_id)
    uuid_field = CallCost._meta.get_field("workflow_id")
    values = [uuid_field.get_db_prep_value(value, connection) for value in ids]
    columns = "call_id, organization_id, workflow_id, call_created_at, usage, complete"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO billing_callcost ({columns}) VALUES (%s, %s, %s, %s, %s, %s)",
            [*values, ended_call.created_at, "[]", True],
        )

    report(agent_api, ended_call, usage(STT, at=T0, session="run-1"))

    assert CallCost.objects.get(call=ended_call).usage_sessions["run-1"]["usage"] == [STT]


def test_a_dispatch_loops_sessions_beyond_the_bound_are_not_kept(agent_api, ended_call) -> None:
    sessions = [
        usage({**STT, "audio_seconds": 1}, session=f"run-{n}") for n in range(MAX_USAGE_SESSIONS)
    ]
    report(agent_api, ended_call, *sessions)
    one_more = usage({**STT, "audio_seconds": 500}, session="run-loop")

    assert report(agent_api, ended_call, one_more).status_code == 200

    cost = CallCost.objects.get(call=ended_call)
    assert cost.usage == [{**STT, "audio_seconds": MAX_USAGE_SESSIONS}]
    assert "run-loop" not in cost.usage_sessions


@pytest.mark.parametrize("session", ["", "a b", "x" * 65, "run/1", 7])
def test_a_malformed_usage_session_is_a_400_naming_it(agent_api, ended_call, session) -> None:
    response = report(agent_api, ended_call, usage(STT, session=session))

    assert response.status_code == 400
    assert [error["attr"] for error in response.json()["errors"]] == ["events.0.session"]
    assert not AgentEvent.objects.filter(call=ended_call).exists()
    assert not CallCost.objects.filter(call=ended_call).exists()


def test_an_organizations_override_prices_its_calls_and_no_one_elses(
    api, agent_api, ended_call, outsider
) -> None:
    override = {
        "component": "tts",
        "provider": "cartesia",
        "model": "*",
        "unit_price_usd": "0.00001",
    }
    assert api.post("/api/v1/prices/overrides", override, format="json").status_code == 201
    PriceOverride.objects.create(
        organization=outsider,
        component="stt",
        provider="deepgram",
        model="nova-3",
        unit_price_usd=1,
    )

    report(agent_api, ended_call, usage(STT, TTS))

    breakdown = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]["breakdown"]
    assert breakdown[0]["unit_price_usd"] == "0.0077"
    assert breakdown[1] == line(
        "tts", "cartesia", "sonic-2", "1000", "character", "0.00001", "0.010000"
    )


def test_a_late_report_keeps_the_prices_the_call_ended_with_and_prices_new_lines_now(
    api, agent_api, ended_call
) -> None:
    """A price set after the end applies to calls that end from then on: not to the
    lines this call was priced with, only to a line it did not have (no other price is
    kept). It re-priced the whole call."""
    report(agent_api, ended_call, usage(STT, at=T0))
    for component, provider in (("room", "livekit"), ("stt", "deepgram"), ("tts", "cartesia")):
        override = {"component": component, "provider": provider, "model": "*"}
        response = api.post(
            "/api/v1/prices/overrides", {**override, "unit_price_usd": "1"}, format="json"
        )
        assert response.status_code == 201, response.content

    report(agent_api, ended_call, usage(STT, TTS, at=T0 + datetime.timedelta(seconds=5)))

    breakdown = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]["breakdown"]
    assert [(item["component"], item["unit_price_usd"]) for item in breakdown] == [
        ("stt", "0.0077"),
        ("tts", "1"),
        ("room", "0.0005"),
    ]


def test_a_model_without_a_price_is_listed_unpriced_and_the_cost_is_incomplete(
    api, agent_api, ended_call
) -> None:
    unknown = {"component": "llm", "provider": "acme", "model": "x-1", "prompt_tokens": 10}

    report(agent_api, ended_call, usage(unknown))

    cost = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]
    assert cost["complete"] is False
    assert cost["breakdown"][0] == line("llm_prompt", "acme", "x-1", "10", "token", None, None)
    assert cost["total_usd"] == "0.001500"  # the room's three minutes only


def test_a_call_costing_beyond_what_a_cost_holds_still_ends_and_is_left_unpriced(
    api, agent_api, workflow, fake_livekit
) -> None:
    """Prices the API accepts can make a total past $10 billion (numeric(16, 6)); the
    end must not fail on it (it is priced in the ending's transaction)."""
    override = {"component": "llm_prompt", "provider": "openai", "model": "*"}
    response = api.post(
        "/api/v1/prices/overrides", {**override, "unit_price_usd": "99999999"}, format="json"
    )
    assert response.status_code == 201, response.content
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    assert report(agent_api, call, usage(LLM)).status_code == 200

    ended = api.post(f"/api/v1/calls/{call.id}/end")

    assert ended.status_code == 200, ended.content
    detail = api.get(f"/api/v1/calls/{call.id}").json()
    assert (detail["status"], detail["cost"]) == ("completed", None)
    assert CallCost.objects.get(call=call).complete is False


def test_the_total_is_rounded_once_not_summed_from_rounded_lines(
    api, agent_api, ended_call
) -> None:
    for component, provider in (("tts", "cartesia"), ("stt", "deepgram")):
        PriceOverride.objects.create(
            organization=ended_call.organization,
            component=component,
            provider=provider,
            model="*",
            unit_price_usd=Decimal("0.0000004"),
        )
    PriceOverride.objects.create(
        organization=ended_call.organization,
        component="room",
        provider="livekit",
        model="room",
        unit_price_usd=0,
    )
    one_minute_of_audio = {**STT, "model": "other", "audio_seconds": 60}
    one_character = {**TTS, "model": "other", "characters": 1}

    report(agent_api, ended_call, usage(one_minute_of_audio, one_character))

    cost = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]
    assert [item["amount_usd"] for item in cost["breakdown"]] == [
        "0.000000",
        "0.000000",
        "0.000000",
    ]
    assert cost["total_usd"] == "0.000001"  # 0.0000008, rounded once


def test_room_minutes_are_priced_from_the_exact_duration_not_a_float(
    api, agent_api, workflow
) -> None:
    """60.06 s at $0.0005 a minute is $0.0005005, half a millionth: it rounds to even.
    `total_seconds()` made it 60.0600000000000023 s, and $0.000501."""
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        started_at=T0,
        ended_at=T0 + datetime.timedelta(seconds=60, microseconds=60_000),
    )

    report(agent_api, call, usage())

    cost = api.get(f"/api/v1/calls/{call.id}").json()["cost"]
    assert cost["breakdown"] == [
        line("room", "livekit", "room", "1.001", "minute", "0.0005", "0.000500")
    ]
    assert cost["total_usd"] == "0.000500"


def test_a_lines_amount_is_rounded_from_its_exact_value_not_a_rounded_minute_count(
    api, agent_api, ended_call
) -> None:
    """60.035 s of audio at $0.006 a minute is $0.0060035, half a millionth: it rounds to
    even, $0.006004. Dividing the seconds by 60 first (1.000583333... minutes, cut at 34
    digits) made it $0.0060034999...98, shown as $0.006003."""
    audio = {**STT, "provider": "openai", "model": "gpt-4o-transcribe", "audio_seconds": 60.035}

    report(agent_api, ended_call, usage(audio))

    cost = api.get(f"/api/v1/calls/{ended_call.id}").json()["cost"]
    assert cost["breakdown"][0] == line(
        "stt", "openai", "gpt-4o-transcribe", "1.000583", "minute", "0.006", "0.006004"
    )
    assert cost["total_usd"] == "0.007504"  # $0.0075035 with the room's three minutes


@pytest.mark.parametrize(
    ("item", "attr"),
    [
        ({**STT, "audio_seconds": -1}, "events.0.usage.0.audio_seconds"),
        ({**STT, "audio_seconds": "12"}, "events.0.usage.0.audio_seconds"),
        ({**LLM, "prompt_tokens": 10**11}, "events.0.usage.0.prompt_tokens"),
        ({**LLM, "prompt_tokens": 10, "cached_tokens": 11}, "events.0.usage.0.cached_tokens"),
        (
            {"component": "llm", "provider": "openai", "model": "m", "cached_tokens": 1},
            "events.0.usage.0.cached_tokens",
        ),
        ({**STT, "component": "vision"}, "events.0.usage.0.component"),
        ({**STT, "provider": "x" * 101}, "events.0.usage.0.provider"),
        ({"component": "stt", "model": "nova-3"}, "events.0.usage.0.provider"),
    ],
)
def test_a_malformed_usage_item_is_a_400_naming_it_and_nothing_is_stored(
    agent_api, ended_call, item: dict, attr: str
) -> None:
    response = report(agent_api, ended_call, usage(item))

    assert response.status_code == 400
    assert [error["attr"] for error in response.json()["errors"]] == [attr]
    assert not AgentEvent.objects.filter(call=ended_call).exists()
    assert not CallCost.objects.filter(call=ended_call).exists()


def test_a_quantity_of_another_component_is_ignored(agent_api, ended_call) -> None:
    report(agent_api, ended_call, usage({**STT, "characters": 5}))

    assert CallCost.objects.get(call=ended_call).usage == [STT]


def test_the_same_model_twice_in_one_report_is_a_400(agent_api, ended_call) -> None:
    response = report(agent_api, ended_call, usage(STT, STT))

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "events.0.usage"


def test_an_organizations_agent_key_cannot_report_usage_on_another_organizations_call(
    org_agent_api, outsider
) -> None:
    call = CallFactory(organization=outsider, completed=True)

    assert report(org_agent_api, call, usage(STT)).status_code == 404
    assert not CallCost.objects.filter(call=call).exists()


def test_usage_reported_before_the_call_row_is_priced_is_kept_with_the_call(
    agent_api, ended_call
) -> None:
    report(agent_api, ended_call, usage(STT))

    cost = CallCost.objects.get(call=ended_call)
    assert cost.organization_id == ended_call.organization_id
    assert cost.workflow_id == ended_call.workflow_id
    assert cost.call_created_at == ended_call.created_at
    assert cost.computed_at is not None and cost.computed_at <= timezone.now()


def test_a_phone_calls_minutes_are_priced_as_sip_minutes_too(api, agent_api, workflow) -> None:
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        completed=True,
        direction="outbound",
        channel="phone",
        phone_number="+14155550123",
        started_at=T0,
        ended_at=T0 + datetime.timedelta(minutes=2),
    )

    report(agent_api, call, usage())

    assert api.get(f"/api/v1/calls/{call.id}").json()["cost"] == {
        "total_usd": "0.009000",
        "breakdown": [
            line("room", "livekit", "room", "2", "minute", "0.0005", "0.001000"),
            line("sip", "livekit", "outbound", "2", "minute", "0.004", "0.008000"),
        ],
        "complete": True,
    }


def test_more_than_fifty_usage_items_is_a_400(agent_api, ended_call) -> None:
    items = [{**STT, "model": f"m-{n}"} for n in range(51)]

    response = report(agent_api, ended_call, usage(*items))

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "events.0.usage"


def _together(*requests: tuple[str, str, dict | None]) -> list[int]:
    """POST each (key, path, body) at the same moment, one thread each; their statuses."""
    from tests.conftest import bearer_client

    barrier = threading.Barrier(len(requests))
    statuses: list[int] = []

    def send(key: str, path: str, body: dict | None) -> None:
        client = bearer_client(key)
        try:
            barrier.wait(timeout=10)
            statuses.append(client.post(path, body, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=request) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_usage_racing_the_end_is_priced_whichever_commits_first(
    agent_key, client_key, workflow, fake_livekit
) -> None:
    """The agent's last usage report and the hang-up arrive together: both take the
    call's row lock, so the cost always ends up priced with the usage."""
    for _ in range(5):
        call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)

        statuses = _together(
            (agent_key, f"/api/v1/agent/calls/{call.id}/events", {"events": [usage(STT)]}),
            (client_key, f"/api/v1/calls/{call.id}/end", None),
        )

        assert sorted(statuses) == [200, 200]
        cost = CallCost.objects.get(call=call)
        assert cost.usage == [STT]
        assert cost.total_usd is not None
        assert cost.breakdown[0]["component"] == "stt"
