"""`extract`: JSON that validates against a caller's JSON Schema, asked again when it does not."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jsonschema
from pydantic import ConfigDict, Field, field_validator

from worker.errors import LLMResponseInvalid, UsageError
from worker.jobs.inputs import (
    MAX_MESSAGE_CHARS,
    MAX_SCHEMA_CHARS,
    JobInput,
    json_problem,
    printable,
)
from worker.jobs.kind import SHOWN_OUTPUT_CHARS, CliInput, Demo, JobKind, job_result
from worker.jobs.registry import register
from worker.llm.types import Usage

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = ["KIND", "PERSON_SCHEMA", "ExtractInput", "extract", "extract_messages"]

JSON = dict[str, Any]
Messages = list[dict[str, str]]


class ExtractInput(JobInput):
    """Input of `extract`: text plus the JSON Schema its output must match."""

    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    json_schema: dict[str, Any] = Field(alias="schema")
    instructions: str | None = Field(None, max_length=2000)
    max_tokens: int = Field(512, ge=1, le=32768)

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _parse_schema(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_SCHEMA_CHARS:
                raise ValueError(f"schema is longer than {MAX_SCHEMA_CHARS} characters")
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"schema is not valid JSON ({exc.msg} at char {exc.pos})"
                ) from None
            problem = json_problem(value, "schema")
            if problem:
                raise ValueError(problem)
        if not isinstance(value, dict):
            raise ValueError(f"schema must be a JSON object, not {type(value).__name__}")
        return value

    @field_validator("json_schema")
    @classmethod
    def _check_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"schema is longer than {MAX_SCHEMA_CHARS} characters")
        if not isinstance(value.get("$schema", ""), str):
            raise ValueError("schema's $schema must be a string (a JSON Schema dialect URI)")
        validator = jsonschema.validators.validator_for(value)
        try:
            validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise ValueError(
                f"schema is not a valid JSON Schema at {where}: {printable(exc.message)}"
            ) from None
        return value


def extract_messages(inp: ExtractInput, feedback: str | None = None) -> Messages:
    """Ask for JSON matching the schema; `feedback` explains what was wrong last time."""
    schema = json.dumps(inp.json_schema, ensure_ascii=False)
    system = (
        "You extract data from text. Answer with one JSON value that matches this JSON "
        f"Schema, and nothing else:\n{schema}"
    )
    if inp.instructions:
        system += f"\n{inp.instructions}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": inp.text}]
    if feedback:
        messages.append(
            {"role": "user", "content": f"Your last answer was invalid: {feedback}. Try again."}
        )
    return messages


def _first_error(schema: JSON, value: Any) -> str | None:
    validator_cls = jsonschema.validators.validator_for(schema)
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def extract(client: LLMClient, inp: ExtractInput, max_attempts: int) -> JSON:
    """JSON that validates against the schema, asking again on invalid output."""
    request = client.server_info().profile.schema_request(inp.json_schema)
    usage = Usage()
    feedback: str | None = None
    last_output = ""
    model = ""
    for attempt in range(1, max_attempts + 1):
        completion = client.chat(
            extract_messages(inp, feedback),
            max_tokens=inp.max_tokens,
            temperature=0.0,
            extra=request,
        )
        usage.add(completion.usage)
        model = completion.model
        last_output = completion.text
        try:
            value = json.loads(completion.text)
        except json.JSONDecodeError as exc:
            feedback = f"not JSON ({exc.msg})"
            if completion.finish_reason == "length":
                feedback += "; the answer was cut off at max_tokens"
            continue
        feedback = _first_error(inp.json_schema, value)
        if feedback is None:
            return job_result(model, usage, data=value, attempts=attempt)
    raise LLMResponseInvalid(
        f"The model's output did not match the schema after {max_attempts} attempts "
        f"(EXTRACT_MAX_ATTEMPTS): {feedback}. Simplify the schema, raise max_tokens, or use a "
        "larger model.",
        last_output[:SHOWN_OUTPUT_CHARS],
    )


def cli_payload(cli: CliInput) -> JSON:
    """`kcw submit extract TEXT --schema JSON|@file [--max-tokens N]`."""
    if not cli.schema:
        raise UsageError("extract needs --schema JSON (or --schema @schema.json)")
    return {"text": cli.text, "schema": cli.schema, **cli.sampling()}


PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
}


DEMO = Demo(
    payload=lambda: {
        "text": "Maria Lopez, 34, moved from Madrid to Lisbon to open a bakery.",
        "schema": PERSON_SCHEMA,
    },
    brief=lambda payload: repr(payload["text"]),
    highlight=lambda result: json.dumps(result["data"]),
)

KIND = register(
    JobKind(
        name="extract",
        help="JSON that matches a JSON Schema",
        input_model=ExtractInput,
        run=lambda ctx, inp: extract(ctx.client, inp, ctx.settings.extract_max_attempts),
        cli_payload=cli_payload,
        demo=DEMO,
        position=30,
    )
)
