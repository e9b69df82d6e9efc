"""The messages each job sends; kept apart so the wording can change without touching logic."""

from __future__ import annotations

import json
from typing import Any

from worker.inputs import ClassifyInput, ExtractInput

__all__ = ["classify_messages", "combine_messages", "extract_messages", "summary_messages"]

Messages = list[dict[str, str]]

SUMMARY_SYSTEM = "You write short, faithful summaries. Keep names, numbers and conclusions."


def summary_messages(text: str, instructions: str | None, part: tuple[int, int] | None) -> Messages:
    """Ask for a summary of `text`, which may be one part of a longer document."""
    where = f"part {part[0]} of {part[1]} of a longer document" if part else "a document"
    ask = f"Summarize the following text, {where}."
    if instructions:
        ask += f" {instructions}"
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\n{text}"},
    ]


def combine_messages(partials: list[str], instructions: str | None) -> Messages:
    """Ask for one summary that merges the summaries of a document's parts."""
    joined = "\n\n".join(partials)
    ask = (
        "The paragraphs below summarize consecutive parts of one document. "
        "Write one short summary of the whole document."
    )
    if instructions:
        ask += f" {instructions}"
    return [
        {"role": "system", "content": SUMMARY_SYSTEM},
        {"role": "user", "content": f"{ask}\n\n{joined}"},
    ]


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
