"""A workflow tool's JSON Schema as the worker checks arguments against it, and as the
LLM is offered it: completed where providers refuse what JSON Schema allows (the API
takes any valid schema of type `object`, and a refused tool fails every request)."""

from __future__ import annotations

from voicecalls.json_schemas import offered_tool_parameters, with_array_items


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


def offered_parameters(spec: dict) -> dict:
    """The tool's parameters as the LLM is offered them (`offered_tool_parameters`); the
    arguments are still checked against the whole schema (`ToolRunner.run`)."""
    return offered_tool_parameters(tool_parameters(spec))
