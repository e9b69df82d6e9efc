"""Job inputs, validated with pydantic before any call to the LLM server.

A bad input becomes `InvalidJobInput` with one line per problem, naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, TypeVar

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import InvalidJobInput

__all__ = [
    "ChatInput",
    "ClassifyInput",
    "EmbedInput",
    "ExtractInput",
    "Message",
    "SummarizeInput",
    "parse_input",
]

# Upper bounds keep a runaway payload from filling Redis or the worker's memory.
MAX_MESSAGE_CHARS = 1_000_000
MAX_DOCUMENT_CHARS = 5_000_000
MAX_LABELS = 200
MAX_SCHEMA_CHARS = 100_000

M = TypeVar("M", bound=BaseModel)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Message(_Input):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class Sampling(_Input):
    """Sampling parameters shared by the generating jobs."""

    max_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] | None = Field(None, max_length=8)

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _int_is_a_float(cls, value: Any) -> Any:
        # JSON writes 1.0 as 1; strict mode would otherwise refuse it.
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ValueError("number is too large") from None
        return value


class ChatInput(Sampling):
    """Input of `chat`: messages plus sampling parameters."""

    messages: list[Message] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _has_content(self) -> ChatInput:
        if not any(m.content.strip() for m in self.messages):
            raise ValueError("every message is empty; give at least one message some content")
        return self


class SummarizeInput(_Input):
    """Input of `summarize`: a document of any length."""

    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)
    max_tokens: int | None = Field(None, ge=16, le=4096)
    instructions: str | None = Field(None, max_length=2000)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank")
        return value


class ExtractInput(_Input):
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
                f"schema is not a valid JSON Schema at {where}: {_printable(exc.message)}"
            ) from None
        return value


class Example(_Input):
    """A labelled example shown to the classifier."""

    text: str = Field(min_length=1, max_length=10_000)
    label: str

    @field_validator("label")
    @classmethod
    def _strip(cls, label: str) -> str:
        return label.strip()


class ClassifyInput(_Input):
    """Input of `classify`: text plus the labels to choose from."""

    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    labels: list[str] = Field(min_length=2, max_length=MAX_LABELS)
    examples: list[Example] = Field(default_factory=list, max_length=50)
    instructions: str | None = Field(None, max_length=2000)

    @field_validator("labels")
    @classmethod
    def _clean_labels(cls, labels: list[str]) -> list[str]:
        cleaned = [label.strip() for label in labels]
        if any(not label for label in cleaned):
            raise ValueError("labels must not be blank")
        if any(len(label) > 200 for label in cleaned):
            raise ValueError("labels must be at most 200 characters")
        dupes = sorted({label for label in cleaned if cleaned.count(label) > 1})
        if dupes:
            raise ValueError(f"labels repeat: {', '.join(dupes)}")
        return cleaned

    @model_validator(mode="after")
    def _examples_use_known_labels(self) -> ClassifyInput:
        unknown = sorted({ex.label for ex in self.examples if ex.label not in self.labels})
        if unknown:
            raise ValueError(
                f"examples use unknown labels {unknown}; each example's label must be one of "
                f"{self.labels}"
            )
        return self


class EmbedInput(_Input):
    """Input of `embed`: one text or a list of texts."""

    texts: list[Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]] = Field(
        min_length=1, max_length=2048
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _one_text(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        if any(not t.strip() for t in texts):
            raise ValueError("texts must not contain blank strings")
        return texts


MAX_DEPTH = 64


def _printable(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters, so an error message stays readable."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def json_problem(payload: Any, root: str = "") -> str | None:
    """What no JSON request can carry, named by its place: a lone surrogate, NaN or
    Infinity, or nesting past MAX_DEPTH; None when there is nothing of the kind.

    These pass type checks but fail later, when the request is encoded.
    """
    stack: list[tuple[Any, str, int]] = [(payload, root, 0)]
    while stack:
        value, where, depth = stack.pop()
        place = _printable(where or "input", 60)
        if depth > MAX_DEPTH:
            return f"{place} is nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return (
                    f"{place} holds a lone surrogate (such as \\ud800), which is not valid "
                    "UTF-8 text"
                )
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{place} is {value}, which JSON cannot carry"
        elif isinstance(value, dict):
            for key, item in value.items():
                name = str(key).encode("utf-8", "backslashreplace").decode("utf-8") or '""'
                stack.append((key, f"a key of {where or 'input'}", depth + 1))
                stack.append((item, f"{where}.{name}" if where else name, depth + 1))
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                stack.append((item, f"{where}.{index}" if where else str(index), depth + 1))
    return None


def describe_validation_error(job: str, exc: ValidationError) -> str:
    """One line per problem, each naming the field, for people reading a failed job."""
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "input"
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{_printable(where, 100)}: {_printable(message)}")
    return f"Invalid input for {job}: " + "; ".join(problems)


def parse_input(model: type[M], job: str, payload: Any) -> M:
    """Validate a job payload, or raise `InvalidJobInput` that says what is wrong."""
    if not isinstance(payload, dict):
        raise InvalidJobInput(
            f"Invalid input for {job}: expected a JSON object, got {type(payload).__name__}"
        )
    problem = json_problem(payload)
    if problem:
        raise InvalidJobInput(f"Invalid input for {job}: {problem}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidJobInput(describe_validation_error(job, exc)) from None
    except RecursionError:
        raise InvalidJobInput(f"Invalid input for {job}: the input is nested too deeply") from None
