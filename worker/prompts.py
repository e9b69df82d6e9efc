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
    joined = "\n\n".join(f"Part {i}: {s}" for i, s in enumerate(partials, 1))
    ask = "These are summaries of consecutive parts of one document. Write one summary of it."
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
    """Ask for the one label that fits the text."""
    labels = ", ".join(json.dumps(label, ensure_ascii=False) for label in inp.labels)
    system = f"Classify the text. Answer with exactly one of these labels: {labels}."
    if inp.instructions:
        system += f" {inp.instructions}"
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for example in inp.examples:
        messages.append({"role": "user", "content": example.text})
        messages.append({"role": "assistant", "content": example.label})
    messages.append({"role": "user", "content": inp.text})
    return messages
