"""schemathesis hooks for `make fuzz`: which key each operation gets, and real
references (call ids, workflow ids and slugs, provider key ids) so generated requests
reach existing objects as well as missing ones.

The ids come from the JSON file `FUZZ_STATE` names, written by scripts/fuzz/setup.py.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import schemathesis
from hypothesis import strategies as st

STATE = json.loads(Path(os.environ["FUZZ_STATE"]).read_text())

AGENT_PATHS = r"^/api/v1/agent/"
WEBHOOK_PATHS = r"^/api/v1/webhooks/"


@schemathesis.auth().apply_to(path_regex=AGENT_PATHS)
class AgentKey:
    """The voice-agent worker's key (a platform key: reaches any call)."""

    def get(self, case, ctx):
        return STATE["agent_key"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# The LiveKit webhook gets no key: it is signed by LiveKit, and an unsigned request
# must be a documented 401.
@schemathesis.auth().skip_for(path_regex=f"{AGENT_PATHS}|{WEBHOOK_PATHS}")
class ClientKey:
    """A client key of organization `fuzz`."""

    def get(self, case, ctx):
        return STATE["client_key"]

    def set(self, case, data, ctx):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


# Path prefix → (path parameter, ids of existing objects).
REFERENCES = {
    "/api/v1/calls/{id}": ("id", STATE["call_ids"]),
    "/api/v1/agent/calls/{call_id}": ("call_id", STATE["call_ids"]),
    "/api/v1/workflows/{id}": ("id", STATE["workflow_ids"]),
    "/api/v1/provider-keys/{id}": ("id", STATE["provider_key_ids"]),
    "/api/v1/webhook-endpoints/{id}": ("id", STATE["webhook_endpoint_ids"]),
    "/api/v1/sip-trunks/{id}": ("id", STATE["sip_trunk_ids"]),
    "/api/v1/phone-numbers/{id}": ("id", STATE["phone_number_ids"]),
}


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _delivery_references(path_parameters: dict):
    """An existing endpoint's existing delivery, both well-formed to begin with."""
    if not (
        _is_uuid(path_parameters.get("id")) and isinstance(path_parameters.get("delivery_id"), int)
    ):
        return st.just(path_parameters)
    existing = st.sampled_from(STATE["webhook_deliveries"]).map(
        lambda pair: {**path_parameters, "id": pair[0], "delivery_id": pair[1]}
    )
    return st.one_of(st.just(path_parameters), existing, existing)


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    """Two in three well-formed ids become an existing object's (malformed ones stay:
    they are negative cases, and must stay invalid)."""
    if ctx.operation.path.endswith("/deliveries/{delivery_id}/replay"):
        return _delivery_references(path_parameters)
    for prefix, (name, ids) in REFERENCES.items():
        if ctx.operation.path.startswith(prefix) and _is_uuid(path_parameters.get(name)):
            existing = st.sampled_from(ids).map(lambda id_, n=name: {**path_parameters, n: id_})
            return st.one_of(st.just(path_parameters), existing, existing)
    return st.just(path_parameters)


@schemathesis.hook
def flatmap_body(ctx, body):
    """Most call creations name a workflow that exists (any other slug is a 400)."""
    operation = ctx.operation
    slug = body.get("workflow_slug") if isinstance(body, dict) else None
    if (operation.method.upper(), operation.path) != ("POST", "/api/v1/calls") or not (
        isinstance(slug, str) and len(slug) <= 100
    ):
        return st.just(body)
    existing = st.sampled_from(STATE["workflow_slugs"]).map(lambda s: {**body, "workflow_slug": s})
    return st.one_of(st.just(body), existing, existing, existing)


# --- Schema-valid requests may be refused only for rules JSON Schema cannot state -----------
# schemathesis.toml lets these operations answer 400 to schema-valid data; this check
# narrows that to the rules named here (attr pattern, error code). A 400 for anything
# else means the schema could state the rule and does not: state it.
_AGENT = r"agents\.\d+"
_WORKFLOW_RULES = [
    (rf"{_AGENT}\.name|{_AGENT}\.tools\.\d+\.name", "duplicate"),  # unique by name
    (r"start_agent|" + rf"{_AGENT}\.handoffs\.\d+", "unknown_agent"),  # names an agent of `agents`
    (rf"{_AGENT}\.handoffs\.\d+", "self_handoff"),
    (rf"{_AGENT}\.(stt|llm|tts)\.fallbacks\.\d+", "duplicate"),  # repeats a choice before it
    (rf"{_AGENT}\.tools\.\d+\.url", "invalid"),  # Django's URL validator (labels, IDNA)
    # A valid JSON Schema (jsonschema's meta-schema; jsonschema-rs takes it too), bounded
    # in depth and size (floats as PostgreSQL prints them), no NUL, no float beyond 64 bits.
    (
        rf"{_AGENT}\.tools\.\d+\.parameters",
        "invalid_schema|too_deep|too_large|null_characters_not_allowed|number_too_large",
    ),
    # A tool's fields by its `type` (the schema lists one flat tool): destinations and a
    # message for transfer tools only, which need destinations and have no url; each
    # number passes the toll-fraud guard (a valid number in a country staff allowed).
    (rf"{_AGENT}\.tools\.\d+\.(destinations|message|url)", "not_allowed"),
    (rf"{_AGENT}\.tools\.\d+\.destinations", "required"),
    (
        rf"{_AGENT}\.tools\.\d+\.destinations\.\d+",
        "invalid_phone_number|emergency_number|costly_number|destination_not_allowed",
    ),
    (r"settings\.voicemail\.message", "required|template_syntax_error"),
    # Model and voice names are trimmed (Python's whitespace, which includes characters
    # such as \x1e that no ECMA pattern's \s matches) before they must be non-empty.
    (rf"{_AGENT}\.(stt|llm|tts)(\.fallbacks\.\d+)?\.(model|voice)", "blank"),
    (r"settings\.min_endpointing_delay", "min_over_max"),
    (r"settings\.language", "unsupported_language"),  # every STT/TTS must take it
    (r"slug", "unique"),  # unique in the organization
    # Analysis: a valid template and JSON Schema (bounded, local `$ref`s only); provider
    # and model named together; with no provider, the start agent's LLM must speak
    # OpenAI's API.
    (r"analysis\.summary_prompt", "template_syntax_error"),
    (
        r"analysis\.structured_data_schema",
        "invalid_schema|too_deep|too_large|null_characters_not_allowed|remote_ref|number_too_large",
    ),
    (r"analysis\.(provider|model)", "required"),
    (r"analysis\.provider", "unsupported_provider"),
]
_TRANSFER_RULES = [
    (
        "destination",
        "destination_not_listed|invalid_phone_number|emergency_number|costly_number"
        "|destination_not_allowed",
    ),
]
_WEBHOOK_RULES = [
    # Django's URL validator and the endpoint checks: host labels of at most 63
    # characters, a host of at most 253, valid IDNA and IPv6, a port of 1 to 65535, no
    # credentials (the SSRF guard's public-address rule is off in this run).
    (r"url", "invalid"),
    (r"None", "limit_reached"),  # the organization's endpoint cap
]
# Any JSON body: an integer beyond 64 bits is refused, not rounded (free-form objects
# such as `user_data` cannot state it).
_LONG_INTEGER = (r"None", "parse_error")
UNSTATED_RULES: dict[str, list[tuple[str, str]]] = {
    "POST /api/v1/calls": [
        (r"workflow_slug", "invalid"),  # a workflow of this organization
        # The toll-fraud guard: a number valid in its country's plan, not an emergency,
        # premium-rate or shared-cost number, in a country staff allowed, with an
        # outbound trunk; the caller id one of the organization's own numbers; a phone
        # call is outbound; `from_number` only with `phone_number`.
        (
            "phone_number",
            "invalid_phone_number|emergency_number|costly_number|destination_not_allowed"
            "|no_outbound_trunk",
        ),
        ("from_number", "invalid_phone_number|not_your_number|invalid"),
        ("direction", "invalid"),
        # Inside free-form JSON: NUL; floats beyond 64 bits (PostgreSQL would answer them
        # as integers no request can send), and the bytes PostgreSQL prints floats in.
        (r"metadata|user_data", "null_characters_not_allowed|number_too_large|too_large"),
    ],
    "POST /api/v1/workflows": _WORKFLOW_RULES,
    "PUT /api/v1/workflows/{id}": _WORKFLOW_RULES,
    "PATCH /api/v1/workflows/{id}": _WORKFLOW_RULES,
    # `provider_name` must be in the catalog of the chosen `provider_type`; the key is
    # trimmed (Python's whitespace, which no ECMA pattern matches exactly) before its
    # 8-character minimum and its printable-ASCII rule are checked.
    "POST /api/v1/provider-keys": [
        ("provider_name", "invalid_choice"),
        ("api_key", "min_length|invalid_characters"),
    ],
    "POST /api/v1/agent/calls/{call_id}/events": [
        (r"events\.\d+\.non_field_errors", "invalid"),  # a metrics event measures something
        # A usage item's cached tokens are some of its prompt tokens, never more.
        (r"events\.\d+\.usage\.\d+\.cached_tokens", "max_value"),
        # Inside free-form JSON (tool arguments), as in POST /calls' user_data.
        (r"events\.\d+\..*", "null_characters_not_allowed|number_too_large|too_large"),
    ],
    # A destination the call's workflow lists, through the toll-fraud guard.
    "POST /api/v1/calls/{id}/transfer": _TRANSFER_RULES,
    "POST /api/v1/agent/calls/{call_id}/transfer": _TRANSFER_RULES,
    "POST /api/v1/webhook-endpoints": _WEBHOOK_RULES,
    "PATCH /api/v1/webhook-endpoints/{id}": _WEBHOOK_RULES,
    # Across parameters: `from` on or before `to`, at most 366 days apart, and the
    # default range (the 30 days up to `to`) within the calendar.
    "GET /api/v1/usage/daily": [("from|to", "invalid")],
    # Across parameters: `started_after` before `started_before`.
    "GET /api/v1/calls": [("started_after", "invalid")],
    # At most the call's last event id: the call's state, not a format.
    "GET /api/v1/calls/{id}/stream": [("Last-Event-ID", "unknown_event_id")],
    # A number valid in its country's plan; an outbound trunk's address.
    "POST /api/v1/sip-trunks": [
        (r"numbers\.\d+", "invalid_phone_number|emergency_number"),
        ("address", "invalid"),
        (r"None", "limit_reached"),  # the organization's trunk cap
        ("auth_password", "invalid_characters"),  # printable ASCII, as provider keys
    ],
    # One of the organization's inbound trunks, one of its numbers, nobody else's; a
    # workflow of the organization; the number and trunk do not change.
    "POST /api/v1/phone-numbers": [
        ("number", "invalid|invalid_phone_number|emergency_number"),
        ("trunk_id|workflow_slug", "invalid"),
    ],
    "PATCH /api/v1/phone-numbers/{id}": [("number|trunk_id|workflow_slug", "invalid")],
    # The endpoint passes the webhook URLs' checks (https, a valid host and port), the
    # region what an S3 client takes (not digits only, no trailing hyphen); the
    # credentials are trimmed before their 1-character minimum and their printable-ASCII
    # rule are checked, as provider keys.
    "PUT /api/v1/organization/recording-storage": [
        ("endpoint|region", "invalid"),
        ("access_key_id|secret_access_key", "blank|min_length|invalid_characters"),
    ],
    # Under the organization's own ceilings; the caller id one of its trunks' numbers.
    "PATCH /api/v1/organization": [
        ("outbound_calls_per_minute|outbound_calls_per_day", "above_maximum"),
        ("default_caller_number", "invalid_phone_number|not_your_number|emergency_number"),
    ],
}


@schemathesis.check
def refused_only_for_unstated_rules(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    rules = [*UNSTATED_RULES.get(case.operation.label, []), _LONG_INTEGER]
    errors = response.json().get("errors", [])
    stated = [
        error
        for error in errors
        if not any(
            re.fullmatch(attr, str(error.get("attr")))
            and re.fullmatch(code, str(error.get("code")))
            for attr, code in rules
        )
    ]
    if stated:
        raise AssertionError(
            "Schema-valid request refused for a rule the schema could state: "
            + json.dumps(stated)[:500]
        )
    return None
