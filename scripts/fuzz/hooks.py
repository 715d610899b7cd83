"""schemathesis hooks for `make fuzz`: which key each operation gets, and real
references (call ids, workflow ids and slugs, provider key ids) so generated requests
reach existing objects as well as missing ones.

The ids come from the JSON file `FUZZ_STATE` names, written by scripts/fuzz/setup.py.
"""

from __future__ import annotations

import json
import os
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
}


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@schemathesis.hook
def flatmap_path_parameters(ctx, path_parameters):
    """Two in three well-formed ids become an existing object's (malformed ones stay:
    they are negative cases, and must stay invalid)."""
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
