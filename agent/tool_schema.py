"""A workflow tool's JSON Schema as the worker checks arguments against it, and as the
LLM is offered it: completed where providers refuse what JSON Schema allows (the API
takes any valid schema of type `object`, and a refused tool fails every request)."""

from __future__ import annotations

import logging

from voicecalls.json_schemas import checking_validator, offered_tool_parameters, with_array_items

# Its warning goes where the tool calls' lines go (agent/workflow.py's logger).
logger = logging.getLogger("voicecalls.agent.workflow")


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


def validation_error(schema: dict, arguments: object) -> str | None:
    """A short message for the LLM when `arguments` do not match `schema`, else None.
    The arguments are the LLM's, the schema the customer's (`checking_validator`: a
    regex must not stall the worker's loop, and every call on it). A schema it cannot
    take (one saved before the API checked this) checks nothing: the tool's endpoint
    still does."""
    try:
        validator = checking_validator(schema)
    except ValueError:
        logger.warning("a tool's parameters schema cannot be checked; arguments pass as sent")
        return None
    error = next(iter(validator.iter_errors(arguments)), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.instance_path)
    return f"{error.message} (at /{where})" if where else error.message
