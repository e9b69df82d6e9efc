"""What a job kind declares: its input model, its run function, its CLI payload and its demo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from worker.config import WorkerSettings
from worker.jobs.inputs import parse_input
from worker.llm.types import Usage

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = [
    "SHOWN_OUTPUT_CHARS",
    "CliInput",
    "Demo",
    "JobContext",
    "JobKind",
    "job_result",
    "task_name",
]

JSON = dict[str, Any]
# How much of the model's last output a failed job keeps in its error.
SHOWN_OUTPUT_CHARS = 2000
I = TypeVar("I", bound=BaseModel)  # noqa: E741 - the input model of a kind


def task_name(kind: str) -> str:
    """The Celery task name of a kind: `kcw.<kind>` is the wire format."""
    return f"kcw.{kind}"


def job_result(model: str, usage: Usage, **fields: Any) -> JSON:
    """A job's JSON result: its own fields, the model that answered and the usage."""
    return {**fields, "model": model, "usage": usage.as_dict()}


@dataclass(frozen=True)
class JobContext:
    """What a running job is given: the worker's LLM client and settings."""

    client: LLMClient
    settings: WorkerSettings


@dataclass(frozen=True)
class CliInput:
    """What `kcw submit` read from its command line, before it becomes a payload."""

    text: str  # the input as one text: `@file` and `-` already read
    words: tuple[str, ...] = ()  # the positional words as typed
    system: str | None = None
    schema: str | None = None  # `@file` already read
    labels: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def sampling(self) -> JSON:
        """`max_tokens` when it was given."""
        return {} if self.max_tokens is None else {"max_tokens": self.max_tokens}


@dataclass(frozen=True)
class Demo:
    """A sample job for `kcw demo`: its payload and how to show it in one line each."""

    payload: Callable[[], JSON]
    brief: Callable[[JSON], str]
    highlight: Callable[[JSON], str]


@dataclass(frozen=True)
class JobKind(Generic[I]):
    """One kind of job, registered once; tasks, `kcw submit`, the demo and tests read it."""

    name: str
    help: str
    input_model: type[I]
    run: Callable[[JobContext, I], Any]
    cli_payload: Callable[[CliInput], JSON]
    demo: Demo | None = None
    # Where the kind is listed in `kcw submit`'s choices and the demo (lowest first).
    position: int = 100

    @property
    def task_name(self) -> str:
        return task_name(self.name)

    def parse(self, payload: Any) -> I:
        """The validated input, or `InvalidJobInput` naming what is wrong."""
        return parse_input(self.input_model, self.name, payload)
