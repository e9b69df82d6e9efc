"""`kcw demo`: one real job of each kind through Redis, a worker and the LLM server."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

__all__ = ["demo_jobs", "run_demo"]

# Real prose that ships with every Python: chapters of the language reference.
DOC_TOPICS = ("execmodel", "import", "exceptions", "assignment")

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
}


def long_document() -> str:
    """About 30,000 characters: long enough that `summarize` splits it and runs a chord."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in DOC_TOPICS if name in topics)


def demo_jobs() -> list[tuple[str, dict[str, Any]]]:
    """The sample jobs, one of each kind the default model can serve."""
    return [
        (
            "chat",
            {
                "messages": [{"role": "user", "content": "Name three uses of a message queue."}],
                "max_tokens": 96,
                "temperature": 0.0,
                "seed": 1,
            },
        ),
        ("summarize", {"text": long_document(), "max_tokens": 160}),
        (
            "extract",
            {
                "text": "Maria Lopez, 34, moved from Madrid to Lisbon to open a bakery.",
                "schema": PERSON_SCHEMA,
            },
        ),
        (
            "classify",
            {
                "text": "Worst purchase ever, a total waste of money.",
                "labels": ["positive", "negative", "neutral"],
            },
        ),
    ]


def _brief(kind: str, payload: dict[str, Any]) -> str:
    if kind == "summarize":
        return f"a document of {len(payload['text']):,} characters"
    if kind == "chat":
        return repr(payload["messages"][-1]["content"])
    return repr(payload["text"])


def _highlight(kind: str, value: dict[str, Any]) -> str:
    """The one line of a result worth reading first."""
    if kind == "chat":
        return str(value["text"])
    if kind == "summarize":
        return f"{value['chunks']} chunks -> {value['summary']}"
    if kind == "extract":
        return json.dumps(value["data"])
    return str(value["label"])


def run_demo(timeout: float, out: TextIO, err: TextIO) -> int:
    """Submit every sample job at once, then wait for each and print what it gave."""
    from worker.app import app
    from worker.cli import wait_for

    started = time.monotonic()
    jobs = [
        (kind, payload, app.send_task(f"kcw.{kind}", args=[payload]))
        for kind, payload in demo_jobs()
    ]
    out.write(f"submitted {len(jobs)} jobs; a worker runs them against the LLM server\n")
    failures = 0
    for kind, payload, result in jobs:
        out.write(f"\n== {kind}: {_brief(kind, payload)}\n")
        out.flush()
        wait_for(result, timeout, err)
        if result.successful():
            value: dict[str, Any] = result.result  # type: ignore[assignment]
            tokens = value["usage"]["total_tokens"]
            out.write(f"-> {_highlight(kind, value)}\n")
            out.write(
                f"   job {result.id}: {tokens} tokens, done at {time.monotonic() - started:.1f}s\n"
            )
        else:
            failures += 1
            out.write(f"-> FAILED: {type(result.result).__name__}: {result.result}\n")
    out.write(
        f"\n{len(jobs) - failures}/{len(jobs)} demo jobs succeeded; "
        "`kcw result <job id>` shows any of them in full\n"
    )
    return 1 if failures else 0
