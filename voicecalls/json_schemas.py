"""Checking values someone else chose (an LLM's answer, its tool arguments) against a
JSON Schema a customer wrote: the API's analyses (analysis/prompt.py) and the
voice-agent worker's tool calls (agent/workflow.py).

jsonschema-rs checks them: its regexes give up rather than backtrack for hours, as
Python's `re` does on `"pattern": "^(a+)+$"` and forty a's and a "!". It reads schemas
as the `jsonschema` package did before it: by their `$schema` (an unknown one as draft
2020-12), `format` as an annotation only, and it never fetches a remote `$ref`.

Django-free: the agent worker has its own venv and imports this module.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema_rs
from jsonschema import validators as jsonschema_validators

_RS_VALIDATORS = {
    jsonschema_validators.Draft4Validator: jsonschema_rs.Draft4Validator,
    jsonschema_validators.Draft6Validator: jsonschema_rs.Draft6Validator,
    jsonschema_validators.Draft7Validator: jsonschema_rs.Draft7Validator,
    jsonschema_validators.Draft201909Validator: jsonschema_rs.Draft201909Validator,
    jsonschema_validators.Draft202012Validator: jsonschema_rs.Draft202012Validator,
}


def _no_retrieval(uri: str) -> object:
    raise ValueError(f"{uri} is not fetched: references must stay inside the schema")


def _draft_of(schema: dict) -> type:
    """The draft `schema` names (`$schema`, else 2020-12); ValueError if not one taken."""
    draft = jsonschema_validators.validator_for(
        schema, default=jsonschema_validators.Draft202012Validator
    )
    if draft not in _RS_VALIDATORS:
        raise ValueError(f"{schema.get('$schema')}: this draft of JSON Schema is not supported")
    return draft


@functools.cache
def _meta_checker(draft: type) -> Any:
    """A jsonschema-rs validator of `draft`'s meta-schema (its `regex` format read as
    jsonschema-rs reads patterns, which is what checks values against them)."""
    return _RS_VALIDATORS[draft](draft.META_SCHEMA, validate_formats=True, retriever=_no_retrieval)


def meta_schema_problem(schema: dict) -> str | None:
    """Why `schema` is not a valid JSON Schema of its draft (by its `$schema`, else draft
    2020-12), or None. jsonschema's own `check_schema` walks the meta-schema in Python at
    ~0.2 ms a subschema: a 16 KiB schema of `{}`s took a second, a request of sixty of
    them minutes; here it is a millisecond."""
    try:
        draft = _draft_of(schema)
    except ValueError as exc:
        return str(exc)
    error = next(iter(_meta_checker(draft).iter_errors(schema)), None)
    if error is None:
        return None
    path = "/".join(str(part) for part in error.instance_path)
    return f"{error.message} at /{path}" if path else error.message


def checking_validator(schema: dict) -> Any:
    """A jsonschema-rs validator for `schema`. ValueError when it cannot take it (a
    regex only Python reads, a remote reference, draft 3)."""
    draft = _draft_of(schema)
    return _RS_VALIDATORS[draft](schema, validate_formats=False, retriever=_no_retrieval)


def first_schema_error(schema: dict, value: object) -> tuple[str, list] | None:
    """The first way `value` breaks `schema` (`checking_validator`): its message, and the
    path to the part of `value` at fault. None when it matches."""
    error = next(iter(checking_validator(schema).iter_errors(value)), None)
    return None if error is None else (error.message, list(error.instance_path))


# Keywords whose value is a subschema or a list of them, and those that map names to them.
_SUBSCHEMAS = (
    "items", "prefixItems", "additionalItems", "unevaluatedItems", "contains",
    "additionalProperties", "unevaluatedProperties", "propertyNames",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
)  # fmt: skip
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def with_array_items(schema: dict) -> dict:
    """A copy of `schema` where every array schema without `items` has `"items": {}`:
    OpenAI refuses a request whose tool or response schema has one ("array schema
    missing items"), Gemini too. An absent `items` means `{}` in every draft, but for
    an `unevaluatedItems` that then finds every item evaluated: what is offered is
    looser there, so callers check values against the schema as written."""
    root = copy.deepcopy(schema)
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        is_array = kind == "array" or (isinstance(kind, list) and "array" in kind)
        if is_array and "items" not in node:
            node["items"] = {}
        for key in _SUBSCHEMAS:
            value = node.get(key)
            stack.extend(value if isinstance(value, list) else [value])
        for key in (*_SUBSCHEMA_MAPS, "dependencies"):
            value = node.get(key)
            if isinstance(value, dict):
                stack.extend(value.values())  # (`dependencies` lists of names: skipped)
    return root


# Refused at the top level of a function's parameters: by OpenAI all five, by Anthropic
# the first three; the whole request fails, so the agent could answer nothing.
_REFUSED_AT_TOP = ("allOf", "anyOf", "oneOf", "enum", "not")


def offered_tool_parameters(parameters: dict) -> dict:
    """A tool's parameters (an object schema) as an LLM is offered them: without what
    providers refuse at the top level. What its branches name becomes properties (the
    top level's own first), what `allOf` requires is required. Looser than `parameters`:
    arguments are checked against those. (The API refuses property names a provider
    refuses among these: workflows.tools.)"""
    offered = dict(parameters)
    branches = {key: offered.pop(key, None) for key in _REFUSED_AT_TOP}
    properties = dict(offered.get("properties") or {})
    required = list(offered.get("required") or [])
    for key in ("allOf", "anyOf", "oneOf"):
        for branch in branches[key] if isinstance(branches[key], list) else []:
            if not isinstance(branch, dict):
                continue
            named = branch.get("properties")
            for name, schema in (named if isinstance(named, dict) else {}).items():
                properties.setdefault(name, schema)
            if key == "allOf":
                required += [name for name in branch.get("required") or [] if name not in required]
    offered["properties"] = properties
    if required:
        offered["required"] = required
    return offered
