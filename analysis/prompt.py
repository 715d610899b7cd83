"""What one analysis asks: the messages (the rendered summary prompt, the success
criteria, the call's own transcript and nothing else) and the JSON Schema of the answer,
and the check of an answer against it."""

from __future__ import annotations

import json
from collections.abc import Iterable

from voicecalls.fields import schema_validator
from workflows.prompts import render, template_context

# A transcript longer than this is cut (the start is kept, with a note): the request
# must fit the model's context window and the provider's body limit.
MAX_TRANSCRIPT_CHARS = 200_000

SYSTEM = (
    "You analyse a finished call between an AI voice agent and a person. Read the "
    "transcript the user message gives and answer with one JSON object matching the "
    "response schema, nothing else."
)


def transcript_text(rows: Iterable[tuple]) -> str:
    """`selectors.call_transcript_rows` as plain text, one line per entry."""
    lines = []
    for _id, role, content, _timestamp, agent_name, tool_call, _interrupted in rows:
        speaker = f"{role} ({agent_name})" if agent_name and role == "assistant" else role
        line = f"{speaker}: {content}"
        if tool_call:
            arguments = json.dumps(tool_call.get("arguments"), ensure_ascii=False)
            line += f" [tool call {tool_call.get('name')} {arguments}]"
        lines.append(line)
    text = "\n".join(lines)
    if len(text) > MAX_TRANSCRIPT_CHARS:
        text = text[:MAX_TRANSCRIPT_CHARS] + "\n[transcript cut here: too long]"
    return text


def answer_schema(analysis: dict) -> dict:
    """The JSON Schema the answer must match: a summary, the structured data when the
    workflow asks for it, a verdict when it has success criteria."""
    properties: dict = {"summary": {"type": "string"}}
    if analysis.get("structured_data_schema"):
        properties["structured_data"] = analysis["structured_data_schema"]
    if analysis.get("success_criteria"):
        properties["success"] = {"type": "boolean"}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def messages(*, analysis: dict, call: object, transcript: str) -> list[dict]:
    context = template_context(
        user_data=call.user_data, metadata=call.metadata, call_id=str(call.id)
    )
    parts = [SYSTEM, f"Summary (`summary`): {render(analysis['summary_prompt'], context)}"]
    if analysis.get("structured_data_schema"):
        parts.append("Structured data (`structured_data`): extract it as the schema says.")
    if analysis.get("success_criteria"):
        parts.append(
            "Success (`success`): true if the call met these criteria, else false: "
            + analysis["success_criteria"]
        )
    return [
        {"role": "system", "content": "\n\n".join(parts)},
        {"role": "user", "content": f"Transcript:\n{transcript or '(empty)'}"},
    ]


def answer_problem(content: str, analysis: dict) -> tuple[dict | None, str | None]:
    """The parsed answer and None, or None and why it does not match the schema."""
    try:
        answer = json.loads(content)
        problem = _schema_problem(answer, analysis)
    except ValueError as exc:
        return None, f"The answer is not valid JSON ({exc.msg})."
    except RecursionError:  # a degenerate answer, deeper than parsing or checking goes
        return None, "The answer is nested too deeply."
    return (None, problem) if problem else (answer, None)


def _schema_problem(answer: object, analysis: dict) -> str | None:
    schema = answer_schema(analysis)
    # The customer's schema is checked on its own, so its `#/...` references resolve.
    custom = schema["properties"].get("structured_data")
    properties = {**schema["properties"], **({"structured_data": {}} if custom else {})}
    checks = [({**schema, "properties": properties}, answer, "")]
    if custom is not None and isinstance(answer, dict) and "structured_data" in answer:
        checks.append((custom, answer["structured_data"], "structured_data"))
    for check_schema, value, prefix in checks:
        error = next(iter(schema_validator(check_schema).iter_errors(value)), None)
        if error is not None:
            path = "/".join(str(p) for p in [prefix, *error.absolute_path] if p != "")
            where = f" at /{path}" if path else ""
            return f"The answer does not match the schema{where}: {error.message}"[:400]
    return None
