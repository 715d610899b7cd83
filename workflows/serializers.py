"""A workflow's definition as nested serializers: the API's types and its validation.

`WorkflowWriteSerializer` is the one place a definition is validated; the services run
it on every write (API, admin, `load_demo`), so nothing stores a definition it refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from analysis.settings import (
    MAX_SUMMARY_PROMPT_CHARS,
    AnalysisSettingsSerializer,
    analysis_llm_problem,
)
from voicecalls.fields import JSONTypedSerializer
from workflows.components import (
    LanguageModelSerializer,
    SpeechToTextSerializer,
    TextToSpeechSerializer,
)
from workflows.languages import agents_language_problems
from workflows.prompts import (
    MAX_TEMPLATE_CHARS,
    MAX_TEMPLATE_DEPTH,
    MAX_TEMPLATE_TOKENS,
    MAX_WORKFLOW_TEMPLATE_TOKENS,
    template_error,
    template_tokens,
)
from workflows.settings import MAX_VOICEMAIL_MESSAGE_CHARS, WorkflowSettingsSerializer
from workflows.tools import (
    NAME_HELP,
    NAME_PATTERN,
    ReportingListSerializer,
    WorkflowToolSerializer,
    error_detail,
    tool_property_problems,
)

MAX_AGENTS = 20
MAX_TOOLS_PER_AGENT = 32
MAX_GREETING_CHARS = 2_000


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 64},
        "maxItems": MAX_AGENTS,
        "uniqueItems": True,
    }
)
class HandoffsField(serializers.ListField):
    """Agent names, each at most once (the schema states it; validation names the
    repeated one)."""


class WorkflowAgentSerializer(JSONTypedSerializer):
    name = serializers.RegexField(NAME_PATTERN, max_length=64, help_text=NAME_HELP)
    instructions = serializers.CharField(
        max_length=MAX_TEMPLATE_CHARS,
        trim_whitespace=False,
        help_text=(
            "System prompt; a Jinja2 template with `user`, `metadata` and `call`, of at most "
            f"{MAX_TEMPLATE_TOKENS} tokens (each name, operator, literal and tag delimiter; "
            f"the text between tags counts once) nested at most {MAX_TEMPLATE_DEPTH} deep; "
            f"all of a workflow's templates together, at most {MAX_WORKFLOW_TEMPLATE_TOKENS:,}."
        ),
    )
    greeting = serializers.CharField(
        max_length=MAX_GREETING_CHARS,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text=(
            "Said when the agent takes over (a template, bounded as `instructions`); empty "
            "to say nothing."
        ),
    )
    tools = WorkflowToolSerializer(many=True, max_length=MAX_TOOLS_PER_AGENT, default=list)
    handoffs = HandoffsField(
        child=serializers.RegexField(NAME_PATTERN, max_length=64),
        max_length=MAX_AGENTS,
        default=list,
        help_text="Names of agents this agent may hand the call to, each once.",
    )
    stt = SpeechToTextSerializer()
    llm = LanguageModelSerializer()
    tts = TextToSpeechSerializer()

    class Meta:
        list_serializer_class = ReportingListSerializer

    def validate(self, data: dict) -> dict:
        errors: dict[str, list[ErrorDetail]] = {}
        for field in ("instructions", "greeting"):
            error = template_error(data[field])
            if error:
                errors[field] = error_detail(
                    f"Agent {data['name']!r} {field}: {error}", "template_syntax_error"
                )
        seen_tools: set[str] = set()
        for index, tool in enumerate(data["tools"]):
            if tool["name"] in seen_tools:
                errors[f"tools.{index}.name"] = error_detail(
                    f"Duplicate tool name {tool['name']!r}.", "duplicate"
                )
            seen_tools.add(tool["name"])
        seen_handoffs: set[str] = set()
        for index, target in enumerate(data["handoffs"]):
            if target == data["name"]:
                errors[f"handoffs.{index}"] = error_detail(
                    "An agent cannot hand off to itself.", "self_handoff"
                )
            elif target in seen_handoffs:
                errors[f"handoffs.{index}"] = error_detail(
                    f"Duplicate handoff {target!r}.", "duplicate"
                )
            seen_handoffs.add(target)
        errors.update(tool_property_problems(data))
        if errors:
            raise serializers.ValidationError(errors)
        return data


class WorkflowDefinitionSerializer(JSONTypedSerializer):
    """What one workflow version holds: `start_agent`, `agents`, `settings`."""

    start_agent = serializers.RegexField(
        NAME_PATTERN, max_length=64, help_text="Name of the agent that opens the call."
    )
    agents = WorkflowAgentSerializer(many=True, min_length=1, max_length=MAX_AGENTS)
    settings = WorkflowSettingsSerializer(
        required=False, allow_null=True, help_text="Omitted or null: every default."
    )
    analysis = AnalysisSettingsSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Post-call analysis (summary, structured data, success verdict) on the "
        "organization's LLM key; null: none.",
    )

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict) and data.get("settings") is None:
            # An omitted `settings` means every default.
            data = {**data, "settings": {}}
        if isinstance(data, dict):
            _templates_within_budget(data)  # before the fields compile them
        return super().to_internal_value(data)

    def validate(self, data: dict) -> dict:
        errors: dict[str, list[ErrorDetail]] = {}
        names: set[str] = set()
        for index, agent in enumerate(data["agents"]):
            if agent["name"] in names:
                errors[f"agents.{index}.name"] = error_detail(
                    f"Duplicate agent name {agent['name']!r}.", "duplicate"
                )
            names.add(agent["name"])
        if data["start_agent"] not in names:
            errors["start_agent"] = error_detail(
                f"No agent named {data['start_agent']!r} in `agents`.", "unknown_agent"
            )
        for index, agent in enumerate(data["agents"]):
            for position, target in enumerate(agent["handoffs"]):
                if target not in names:
                    errors[f"agents.{index}.handoffs.{position}"] = error_detail(
                        f"Agent {agent['name']!r} hands off to {target!r}, "
                        "which is not in `agents`.",
                        "unknown_agent",
                    )
        analysis = data.get("analysis")
        start = next((a for a in data["agents"] if a["name"] == data["start_agent"]), None)
        if analysis and start is not None:
            problem = analysis_llm_problem(analysis, start["llm"])
            if problem:
                errors["analysis.provider"] = error_detail(problem, "unsupported_provider")
        language = data["settings"].get("language")
        if language:
            problems = agents_language_problems(data["agents"], language)
            if problems:
                errors["settings.language"] = [
                    ErrorDetail(problem, code="unsupported_language") for problem in problems
                ]
        if errors:
            raise serializers.ValidationError(errors)
        return data


def _templates_of(data: dict) -> Iterator[tuple[object, int]]:
    """The templates a workflow body holds, as sent (any type: the fields check them),
    each with its field's length limit."""
    agents = data.get("agents")
    for agent in agents[:MAX_AGENTS] if isinstance(agents, list) else []:
        if isinstance(agent, dict):
            yield agent.get("instructions"), MAX_TEMPLATE_CHARS
            yield agent.get("greeting"), MAX_GREETING_CHARS
    settings, analysis = data.get("settings"), data.get("analysis")
    voicemail = settings.get("voicemail") if isinstance(settings, dict) else None
    if isinstance(voicemail, dict):
        yield voicemail.get("message"), MAX_VOICEMAIL_MESSAGE_CHARS
    if isinstance(analysis, dict):
        yield analysis.get("summary_prompt"), MAX_SUMMARY_PROMPT_CHARS


def _templates_within_budget(data: dict) -> None:
    """ValidationError (on `agents`) when the workflow's templates together hold more
    than MAX_WORKFLOW_TEMPLATE_TOKENS. One past its own bounds counts at the bound, one
    too long not at all: its field says what is wrong with it."""
    tokens = 0
    for source, max_length in _templates_of(data):
        if isinstance(source, str) and len(source) <= max_length:
            tokens += template_tokens(source)
    if tokens > MAX_WORKFLOW_TEMPLATE_TOKENS:
        raise serializers.ValidationError(
            {
                "agents": error_detail(
                    f"Templates too complex together: more than "
                    f"{MAX_WORKFLOW_TEMPLATE_TOKENS:,} tokens in all (the agents' "
                    "instructions and greetings, the voicemail message and the analysis "
                    "prompt; each counts as it does against its own bound).",
                    "template_syntax_error",
                )
            }
        )


class WorkflowWriteSerializer(WorkflowDefinitionSerializer):
    """Body of create and update: the whole workflow (PATCH merges into the current one)."""

    slug = serializers.SlugField(max_length=100, help_text="Unique in your organization.")
    name = serializers.CharField(max_length=200)


def definition_of(data: dict) -> dict:
    """The versioned part of validated workflow data, as plain JSON. `analysis` only
    when set, so versions saved before it existed compare equal to an unchanged save."""
    definition = {
        "start_agent": data["start_agent"],
        "agents": data["agents"],
        "settings": data["settings"],
    }
    if data.get("analysis"):
        definition["analysis"] = data["analysis"]
    return json.loads(json.dumps(definition))


class WorkflowSerializer(serializers.Serializer):
    """A workflow as the API shows it: its current version's definition flattened in."""

    id = serializers.UUIDField()
    slug = serializers.SlugField()
    name = serializers.CharField()
    start_agent = serializers.CharField(source="current_version.start_agent")
    agents = WorkflowAgentSerializer(many=True, source="current_version.definition.agents")
    settings = WorkflowSettingsSerializer(source="current_version.settings")
    analysis = AnalysisSettingsSerializer(
        source="current_version.analysis", allow_null=True, help_text="Null: no analysis."
    )
    version = serializers.IntegerField(
        source="current_version.number", help_text="Current version number; new calls use it."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WorkflowVersionSerializer(serializers.Serializer):
    version = serializers.IntegerField(source="number")
    start_agent = serializers.CharField()
    agents = WorkflowAgentSerializer(many=True, source="definition.agents")
    settings = WorkflowSettingsSerializer()
    analysis = AnalysisSettingsSerializer(allow_null=True, help_text="Null: no analysis.")
    created_at = serializers.DateTimeField()


def workflow_as_input(workflow: Any) -> dict:
    """A workflow's current state in the write shape, for merging a PATCH into."""
    return {"slug": workflow.slug, "name": workflow.name, **workflow.current_version.definition}


def patch_merge(current: dict, patch: Any) -> Any:
    """A PATCH replaces the top-level fields it names; `settings` merges key by key."""
    if not isinstance(patch, dict):
        return patch
    merged = {**current, **patch}
    if isinstance(patch.get("settings"), dict):
        merged["settings"] = {**current.get("settings", {}), **patch["settings"]}
    return merged
