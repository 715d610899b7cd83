"""A call's provider keys, and an inbound caller's number, never reach the agent
process's logs, whoever logs them."""

from __future__ import annotations

import io
import logging

import pytest
from livekit.agents.cli.log import JsonFormatter

from agent.api import AgentAPI
from agent.config import Config
from agent.redact import REDACTED, log_secrets_add
from agent.tests.conftest import Web
from agent.worker import fetch_session, worker_options


class Refused(Exception):
    pass


def logged_by_a_plugin(key: str, formatter: logging.Formatter) -> str:
    """What a provider plugin's refused-key error logs, as its handler writes it."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    plugin = logging.getLogger("livekit.plugins.someprovider")
    plugin.addHandler(handler)
    try:
        try:
            raise Refused(f"401 Incorrect API key provided: {key}")
        except Refused:
            plugin.error("request failed (key %s)", key, exc_info=True, stack_info=True)
    finally:
        plugin.removeHandler(handler)
    return output.getvalue()


@pytest.mark.parametrize("formatter", [logging.Formatter(), JsonFormatter()])
async def test_a_sessions_keys_are_replaced_in_every_log_record_made_after_it_came(
    web: Web, formatter: logging.Formatter
) -> None:
    call_id = web.create_call(user_data={"name": "Bo"})["call_id"]
    data = await fetch_session(AgentAPI(web.base_url, web.agent_key), call_id)
    key = data["workflow"]["agents"][0]["llm"]["api_key"]

    logged = logged_by_a_plugin(key, formatter)

    assert key and key not in logged
    # The message, the exception and the stack are all still there, the key replaced.
    assert logged.count(REDACTED) >= 2
    assert "Refused" in logged and "request failed" in logged


async def test_a_sessions_tool_signing_secrets_are_replaced_in_every_log_record_too(
    web: Web,
) -> None:
    made = web.ok("POST", "/api/v1/tool-signing-secret/rotate", web.orgs["demo"].client_key)
    call_id = web.create_call(user_data={"name": "Bo"})["call_id"]
    data = await fetch_session(AgentAPI(web.base_url, web.agent_key), call_id)
    secret = made["secret"]
    assert secret in data["tool_signing_secrets"]

    for logged in (secret, secret.removeprefix("whsec_")):
        line = logged_by_a_plugin(logged, logging.Formatter())
        assert logged not in line and REDACTED in line


def test_a_key_in_a_records_extra_fields_is_replaced_too() -> None:
    # livekit-agents logs errors as extra fields ("session closed", extra={"error": ...}),
    # which its JsonFormatter writes out.
    key = "sk-extra-field-0123456789"
    log_secrets_add({key})
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter())
    session_logger = logging.getLogger("livekit.agents")
    session_logger.addHandler(handler)
    try:
        session_logger.error(
            "session closed",
            extra={"error": Refused(f"401 Incorrect API key provided: {key}"), "attempt": 2},
        )
    finally:
        session_logger.removeHandler(handler)

    logged = output.getvalue()
    assert "session closed" in logged and key not in logged
    assert REDACTED in logged and '"attempt": 2' in logged


def test_a_key_in_the_arguments_of_a_malformed_log_call_is_replaced_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A call whose message and arguments do not match (a plugin's bug) fails to format;
    # logging then writes "Message: ... Arguments: (...)" to stderr (Handler.handleError).
    key = "sk-malformed-0123456789"
    log_secrets_add({key})
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    plugin = logging.getLogger("livekit.plugins.malformed")
    plugin.addHandler(handler)
    plugin.propagate = False  # only this handler (pytest's own raises on a logging error)
    try:
        plugin.error("request failed with key %s", key, "unexpected extra argument")
    finally:
        plugin.removeHandler(handler)
        plugin.propagate = True

    err = capsys.readouterr().err
    assert "Logging error" in err  # logging did report the malformed call
    assert key not in output.getvalue() + err


def test_a_log_call_that_logging_itself_survives_does_not_raise_once_keys_are_registered():
    # A hand-made exc_info logging takes (the handler reports what it cannot format):
    # redaction formats it inside makeRecord, where nothing catches what it raises.
    log_secrets_add({"sk-never-raise-0123456789"})
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    plugin = logging.getLogger("livekit.plugins.oddexcinfo")
    plugin.addHandler(handler)
    plugin.propagate = False
    try:
        plugin.error("request failed", exc_info=(ValueError, "not an exception", None))
    finally:
        plugin.removeHandler(handler)
        plugin.propagate = True


def test_a_message_whose_text_cannot_be_made_does_not_raise_once_keys_are_registered():
    # logger.warning(exc) with an exception whose __str__ fails: logging itself survives
    # it (the handler reports it); redaction, run inside makeRecord, must not raise.
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    log_secrets_add({"sk-never-raise-unprintable-0123"})
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.handleError = lambda record: None  # type: ignore[method-assign]
    plugin = logging.getLogger("livekit.plugins.unprintable")
    plugin.addHandler(handler)
    plugin.propagate = False
    try:
        plugin.warning(Unprintable())
    finally:
        plugin.removeHandler(handler)
        plugin.propagate = True


def test_livekit_agents_own_lines_keep_no_callers_number_from_an_inbound_room() -> None:
    """docs/privacy.md: logs carry no numbers. livekit-agents logs every job request it
    receives with its room, and its job processes' lines with it: LiveKit names an
    inbound caller's room and SIP participant after their number."""
    worker_options(Config(api_url="http://127.0.0.1:9", agent_key="k"))  # the worker starts
    room = "inbound-_+12025550177_Xy7Qa2"
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(JsonFormatter())
    job = {"room": {"name": room}, "participant": {"identity": "sip_+12025550177"}}
    worker_logger = logging.getLogger("livekit.agents")
    level = worker_logger.level
    worker_logger.addHandler(handler)
    worker_logger.setLevel(logging.INFO)
    try:
        worker_logger.info(
            "received job request", extra={"job_id": "AJ_1", "room": room, "room_id": "RM_1"}
        )
        worker_logger.warning("received assignment for an unknown job", extra={"job": job})
        worker_logger.info("job in room %s ended", room)
    finally:
        worker_logger.removeHandler(handler)
        worker_logger.setLevel(level)

    logged = output.getvalue()
    assert "5550177" not in logged
    assert logged.count("inbound-_…0177_Xy7Qa2") == 3 and "sip_…0177" in logged
    assert '"job_id": "AJ_1"' in logged
