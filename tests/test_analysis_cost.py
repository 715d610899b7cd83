"""The post-call analysis's own LLM tokens in the call's cost: priced with the table as
the conversation's are, shown as lines of `phase` `analysis`, counted in the call's
total, the usage per day and the webhooks, and never twice."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from accounts.models import Organization
from analysis.services import call_analysis_rerun
from billing.models import CallCost
from calls.models import Call
from tests.fake_llm import FakeLLM, Outcome
from tests.test_analysis_run import ENDED_AND_ANALYZED, VALID, analysis_of, ended_call, run_worker
from tests.test_call_cost import STT, report, usage
from tests.test_webhook_delivery import run_worker as run_webhooks_worker
from tests.webhook_receiver import Receiver
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)

WRONG = {**VALID, "structured_data": {"calories": "many"}}  # not matching the schema


def tokens(prompt: int, completion: int, cached: int = 0) -> dict:
    """An answer's `usage` as OpenAI reports it."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def line(component: str, quantity: str, unit_price: str, amount: str) -> dict:
    """A line of the analysis on the workflow's model (gpt-4.1-mini, the default)."""
    return {
        "component": component,
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "quantity": quantity,
        "unit": "token",
        "unit_price_usd": unit_price,
        "amount_usd": amount,
        "phase": "analysis",
    }


def cost_of(api, call: Call) -> dict:
    return api.get(f"/api/v1/calls/{call.pk}").json()["cost"]


def analysis_lines(cost: dict) -> list[dict]:
    return [entry for entry in cost["breakdown"] if entry["phase"] == "analysis"]


def quantities(cost: dict) -> dict[str, str]:
    return {entry["component"]: entry["quantity"] for entry in analysis_lines(cost)}


def test_the_analysis_tokens_are_lines_of_their_own_in_the_calls_cost(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    before = cost_of(api, call)
    fake_llm.default = Outcome.answer(VALID, usage=tokens(2000, 300, cached=500))

    run_worker()

    cost = cost_of(api, call)
    assert analysis_lines(cost) == [
        line("llm_prompt", "1500", "0.0000004", "0.000600"),
        line("llm_cached", "500", "0.0000001", "0.000050"),
        line("llm_completion", "300", "0.0000016", "0.000480"),
    ]
    # What the call itself used is labelled as the call's.
    assert cost["breakdown"][: len(before["breakdown"])] == before["breakdown"]
    assert {entry["phase"] for entry in before["breakdown"]} <= {"call"}
    assert Decimal(cost["total_usd"]) == Decimal(before["total_usd"]) + Decimal("0.001130")
    assert cost["complete"] is True


def test_the_analysis_is_priced_as_the_model_asked_though_the_answer_names_a_snapshot(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    """OpenAI answers `gpt-4.1-mini` with `gpt-4.1-mini-2025-04-14`, a name no price line
    has: priced by it, every analysis would be listed unpriced and the cost incomplete."""
    call = ended_call(organization)
    snapshot = "gpt-4.1-mini-2025-04-14"
    fake_llm.default = Outcome.answer(VALID, usage=tokens(1000, 100), model=snapshot)

    run_worker()

    cost = cost_of(api, call)
    assert analysis_of(call).model == snapshot  # the analysis says who answered
    assert [(e["model"], e["amount_usd"]) for e in analysis_lines(cost)] == [
        ("gpt-4.1-mini", "0.000400"),
        ("gpt-4.1-mini", "0.000160"),
    ]
    assert cost["complete"] is True


def test_an_answer_asked_for_again_counts_both_requests_tokens(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    fake_llm.outcomes = [
        Outcome(content="not json {", usage=tokens(1000, 50)),
        Outcome.answer(VALID, usage=tokens(1200, 100)),
    ]

    run_worker()

    assert analysis_of(call).status == "completed"
    assert quantities(cost_of(api, call)) == {"llm_prompt": "2200", "llm_completion": "150"}


def test_a_failed_analysis_counts_the_tokens_its_answers_used(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    fake_llm.outcomes = [
        Outcome.answer(WRONG, usage=tokens(1000, 40)),
        Outcome.answer(WRONG, usage=tokens(1100, 40)),
    ]

    run_worker()

    assert analysis_of(call).status == "failed"
    assert quantities(cost_of(api, call)) == {"llm_prompt": "2100", "llm_completion": "80"}


def test_an_attempt_cut_short_by_a_provider_error_keeps_what_its_first_answer_used(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    """The answer was invalid, the request asking again failed (a 500): the attempt is
    retried, and the first answer's tokens, billed by the provider, are still counted."""
    call = ended_call(organization)
    fake_llm.outcomes = [
        Outcome(content="not json {", usage=tokens(1000, 50)),
        Outcome(status=500),
        Outcome.answer(VALID, usage=tokens(900, 70)),
    ]

    run_worker()  # the retry is due at once (no backoff in the tests)

    assert (analysis_of(call).status, analysis_of(call).attempts) == ("completed", 2)
    assert quantities(cost_of(api, call)) == {"llm_prompt": "1900", "llm_completion": "120"}


def test_a_rerun_adds_its_own_tokens_and_a_repricing_counts_none_twice(
    api, agent_api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    fake_llm.default = Outcome.answer(VALID, usage=tokens(1000, 100))
    run_worker()

    call_analysis_rerun(call=Call.objects.get(pk=call.pk))
    run_worker()
    # The agent's last usage arrives late: the call is priced again from what is kept.
    report(agent_api, call, usage(STT))

    cost = cost_of(api, call)
    assert quantities(cost) == {"llm_prompt": "2000", "llm_completion": "200"}
    assert [e["component"] for e in cost["breakdown"] if e["phase"] == "call"][0] == "stt"
    assert CallCost.objects.get(call=call).analysis_usage == [
        {
            "component": "llm",
            "provider": "openai",
            "model": "gpt-4.1-mini",
            "prompt_tokens": 2000,
            "completion_tokens": 200,
            "cached_tokens": 0,
        }
    ]


def test_an_answer_without_usage_adds_no_line(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    fake_llm.default = Outcome.answer(VALID)

    run_worker()

    assert analysis_of(call).status == "completed"
    assert analysis_lines(cost_of(api, call)) == []


def test_the_usage_per_day_counts_the_analysis_as_the_call_does(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization)
    fake_llm.default = Outcome.answer(VALID, usage=tokens(100000, 10000))
    run_worker()

    day = Call.objects.get(pk=call.pk).created_at.date()
    daily = api.get("/api/v1/usage/daily", {"from": day, "to": day}).json()

    cost = cost_of(api, call)
    assert analysis_lines(cost)
    assert daily["total"]["cost_usd"] == cost["total_usd"]
    assert Decimal(daily["total"]["cost_usd"]) >= Decimal("0.056")  # 0.04 + 0.016


def test_call_analyzed_carries_the_cost_with_the_analysis_the_report_before_it_had_not(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Outcome.answer(VALID, usage=tokens(1000, 100))
    with Receiver() as receiver:
        _, secret = webhook_endpoint_create(
            organization=organization, url=receiver.url, events=ENDED_AND_ANALYZED
        )
        call = ended_call(organization)

        run_webhooks_worker()  # the report first: the analysis is still pending
        run_worker()
        run_webhooks_worker()

        report_, analyzed = [r.verify(secret) for r in receiver.received]
    assert analysis_lines(report_["data"]["call"]["cost"]) == []
    assert analyzed["type"] == "call.analyzed"
    assert analyzed["data"]["cost"] == cost_of(api, call)
    assert quantities(analyzed["data"]["cost"]) == {"llm_prompt": "1000", "llm_completion": "100"}


def test_a_report_built_after_the_analysis_carries_its_cost(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Outcome.answer(VALID, usage=tokens(1000, 100))
    with Receiver() as receiver:
        _, secret = webhook_endpoint_create(
            organization=organization, url=receiver.url, events=ENDED_AND_ANALYZED
        )
        call = ended_call(organization)

        run_worker()  # the analysis first
        run_webhooks_worker()

        (report_,) = [r.verify(secret) for r in receiver.received]
    assert report_["data"]["call"]["cost"] == cost_of(api, call)
    assert analysis_lines(report_["data"]["call"]["cost"])


def test_a_cost_priced_before_lines_had_a_phase_shows_them_as_the_calls(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    call = ended_call(organization, key=False)  # skipped: no request, no tokens
    run_worker()
    stored = {
        "component": "room",
        "provider": "livekit",
        "model": "room",
        "quantity": "3",
        "unit": "minute",
        "unit_price_usd": "0.0005",
        "amount_usd": "0.001500",
    }
    CallCost.objects.filter(call=call).update(breakdown=[stored], total_usd=Decimal("0.0015"))

    assert cost_of(api, call)["breakdown"] == [{**stored, "phase": "call"}]


def test_the_release_before_analysis_usage_still_prices_calls_while_the_migration_has_run(
    api, organization: Organization, fake_llm: FakeLLM
) -> None:
    """README "Upgrading": `migrate` runs while the previous release serves; its insert
    names no `analysis_usage`, and the analysis finishing later must count on it."""
    call = ended_call(organization)
    CallCost.objects.filter(call=call).delete()
    ids = (call.pk, call.organization_id, call.workflow_id)
    uuid_field = CallCost._meta.get_field("workflow_id")
    values = [uuid_field.get_db_prep_value(value, connection) for value in ids]
    columns = "call_id, organization_id, workflow_id, call_created_at, usage, complete"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO billing_callcost ({columns}) VALUES (%s, %s, %s, %s, %s, %s)",
            [*values, Call.objects.get(pk=call.pk).created_at, "[]", True],
        )
    fake_llm.default = Outcome.answer(VALID, usage=tokens(1000, 100))

    run_worker()

    assert quantities(cost_of(api, call)) == {"llm_prompt": "1000", "llm_completion": "100"}


def test_recording_the_analysis_usage_reads_the_database_a_fixed_number_of_times(
    organization: Organization, fake_llm: FakeLLM, django_assert_num_queries
) -> None:
    from billing.services import call_analysis_usage_record

    call = ended_call(organization, key=False)
    item = {"component": "llm", "provider": "openai", "model": "gpt-4.1-mini"}
    spent = [{**item, "prompt_tokens": 10, "completion_tokens": 1, "cached_tokens": 0}]

    # The call with its cost, the organization's overrides, the cost's update.
    with django_assert_num_queries(3):
        call_analysis_usage_record(call_id=call.pk, usage=spent)

    assert CallCost.objects.get(call=call).analysis_usage == spent
