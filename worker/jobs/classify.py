"""`classify`: exactly one label out of a caller's list, under constrained decoding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from worker.errors import LLMResponseInvalid, UsageError
from worker.jobs.inputs import MAX_LABELS, MAX_MESSAGE_CHARS, JobInput
from worker.jobs.kind import SHOWN_OUTPUT_CHARS, CliInput, Demo, JobKind, job_result
from worker.jobs.registry import register
from worker.llm.types import Usage

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = ["KIND", "ClassifyInput", "Example", "classify", "classify_messages"]

JSON = dict[str, Any]
Messages = list[dict[str, str]]


class Example(JobInput):
    """A labelled example shown to the classifier."""

    text: str = Field(min_length=1, max_length=10_000)
    label: str

    @field_validator("label")
    @classmethod
    def _strip(cls, label: str) -> str:
        return label.strip()


class ClassifyInput(JobInput):
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


def classify_messages(inp: ClassifyInput) -> Messages:
    """Ask for the one label that fits the text (decoding is constrained to the labels too)."""
    labels = ", ".join(inp.labels)
    system = "You are a careful text classifier."
    if inp.instructions:
        system += f" {inp.instructions}"
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]

    def ask(text: str) -> str:
        return f'Classify the following text as one of: {labels}.\n\nText: "{text}"\n\nLabel:'

    for example in inp.examples:
        messages.append({"role": "user", "content": ask(example.text)})
        messages.append({"role": "assistant", "content": example.label})
    messages.append({"role": "user", "content": ask(inp.text)})
    return messages


def classify(client: LLMClient, inp: ClassifyInput, max_attempts: int) -> JSON:
    """Exactly one of the labels, chosen under constrained decoding."""
    profile = client.server_info().profile
    request = profile.choice_request(inp.labels)
    usage = Usage()
    last_output = ""
    for _ in range(max_attempts):
        completion = client.chat(
            classify_messages(inp), max_tokens=64, temperature=0.0, extra=request
        )
        usage.add(completion.usage)
        last_output = completion.text
        try:
            label = profile.parse_choice(completion.text)
        except (ValueError, KeyError, TypeError):
            continue
        if label in inp.labels:
            return job_result(completion.model, usage, label=label)
    raise LLMResponseInvalid(
        f"The model did not answer with one of the labels {inp.labels} after {max_attempts} "
        "attempts (EXTRACT_MAX_ATTEMPTS).",
        last_output[:SHOWN_OUTPUT_CHARS],
    )


def cli_payload(cli: CliInput) -> JSON:
    """`kcw submit classify TEXT --labels a,b,c`."""
    if not cli.labels:
        raise UsageError("classify needs --labels a,b,c")
    return {"text": cli.text, "labels": [x for x in cli.labels.split(",") if x != ""]}


DEMO = Demo(
    payload=lambda: {
        "text": "Worst purchase ever, a total waste of money.",
        "labels": ["positive", "negative", "neutral"],
    },
    brief=lambda payload: repr(payload["text"]),
    highlight=lambda result: str(result["label"]),
)

KIND = register(
    JobKind(
        name="classify",
        help="one label out of a list",
        input_model=ClassifyInput,
        run=lambda ctx, inp: classify(ctx.client, inp, ctx.settings.extract_max_attempts),
        cli_payload=cli_payload,
        demo=DEMO,
        position=40,
    )
)
