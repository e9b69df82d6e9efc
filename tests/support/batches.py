"""Batch API helpers shared by the integration and fault tiers: input lines, and a polling client.

Everything goes through the official `openai` SDK, as a user's code would: upload with
`files.create`, start with `batches.create`, poll with `batches.retrieve`, read with
`files.content`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
from openai.types import Batch

__all__ = [
    "ENDED",
    "chat_line",
    "create_batch",
    "jsonl",
    "read_lines",
    "run_batch",
    "wait_for",
    "wait_while",
]

ENDED = ("completed", "failed", "expired", "cancelled")
CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    """A chat request line (8 tokens at temperature 0 unless `body` says otherwise)."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 8,
            "temperature": 0,
            **body,
        },
    }


def jsonl(lines: list[Any]) -> bytes:
    """JSONL bytes; a `bytes` item is written as it is (for broken lines)."""
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def create_batch(client: openai.OpenAI, lines: list[Any], endpoint: str = CHAT) -> Batch:
    """Upload `lines` and start a batch over them; returns the batch as created."""
    uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def wait_while(
    client: openai.OpenAI,
    batch_id: str,
    going: Callable[[Batch], bool],
    timeout: float = 600,
    poll: float = 0.3,
) -> Batch:
    """Poll like a client would while `going(batch)` holds (a bound, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if not going(batch):
            return batch
        counts = batch.request_counts
        assert time.monotonic() < deadline, f"batch still {batch.status} ({counts})"
        time.sleep(poll)


def wait_for(client: openai.OpenAI, batch_id: str, timeout: float = 600) -> Batch:
    """Poll until the batch ends."""
    return wait_while(client, batch_id, lambda b: b.status not in ENDED, timeout)


def run_batch(client: openai.OpenAI, lines: list[Any], endpoint: str = CHAT) -> Batch:
    """Create a batch over `lines` and wait until it ends."""
    return wait_for(client, create_batch(client, lines, endpoint).id)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The JSON lines of an output or error file (none when there is no file)."""
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
