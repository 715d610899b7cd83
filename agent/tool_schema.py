"""A workflow tool's JSON Schema as the worker checks arguments against it, and as the
LLM is offered it: completed where providers refuse what JSON Schema allows (the API
takes any valid schema of type `object`, and a refused tool fails every request)."""

from __future__ import annotations

from voicecalls.json_schemas import with_array_items


def tool_parameters(spec: dict) -> dict:
    """The tool's JSON Schema, completed to the object schema LLM providers expect."""
    parameters = with_array_items(spec.get("parameters") or {})
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return parameters


def checked_parameters(spec: dict) -> dict:
    """The schema the arguments are checked against: the customer's as written (an
    empty object schema without one); `tool_parameters` is looser where it adds `items`
    beside an `unevaluatedItems`."""
    return spec.get("parameters") or {"type": "object", "properties": {}}


# Refused at the top level of a function's parameters: by OpenAI all five, by Anthropic
# the first three; the whole request fails, so the agent could answer nothing.
_REFUSED_AT_TOP = ("allOf", "anyOf", "oneOf", "enum", "not")


def offered_parameters(spec: dict) -> dict:
    """The tool's parameters as the LLM is offered them: `tool_parameters` without what
    providers refuse at the top level. What its branches name becomes properties (the
    top level's own first), what `allOf` requires is required; the arguments are still
    checked against the whole schema (`ToolRunner.run`)."""
    parameters = tool_parameters(spec)
    branches = {key: parameters.pop(key, None) for key in _REFUSED_AT_TOP}
    properties = parameters["properties"]
    required = list(parameters.get("required") or [])
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in branches[key] if isinstance(branches[key], list) else []:
            if not isinstance(branch, dict):
                continue
            for name, schema in (branch.get("properties") or {}).items():
                properties.setdefault(name, schema)
            if key == "allOf":
                required += [name for name in branch.get("required") or [] if name not in required]
    if required:
        parameters["required"] = required
    return parameters
