"""What every job input shares, validated with pydantic before any call to the LLM server.

A bad input becomes `InvalidJobInput` with one line per problem, naming the field.
Each kind's own input model lives in its module in `worker.jobs`.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.errors import InvalidJobInput

__all__ = [
    "MAX_DOCUMENT_CHARS",
    "MAX_LABELS",
    "MAX_MESSAGE_CHARS",
    "MAX_SCHEMA_CHARS",
    "JobInput",
    "Message",
    "Sampling",
    "json_problem",
    "parse_input",
    "printable",
]

# Upper bounds keep a runaway payload from filling Redis or the worker's memory.
MAX_MESSAGE_CHARS = 1_000_000
MAX_DOCUMENT_CHARS = 5_000_000
MAX_LABELS = 200
MAX_SCHEMA_CHARS = 100_000

M = TypeVar("M", bound=BaseModel)


class JobInput(BaseModel):
    """The base of every job input: unknown fields and loose types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Message(JobInput):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGE_CHARS)


class Sampling(JobInput):
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


MAX_DEPTH = 64


def printable(text: str, limit: int = 300) -> str:
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
        place = printable(where or "input", 60)
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
        problems.append(f"{printable(where, 100)}: {printable(message)}")
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
