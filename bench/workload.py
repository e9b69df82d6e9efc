"""The requests every phase sends: the same work, unique prompts, exactly `max_tokens` each.

Each prompt starts with its own tag, so no phase rides the prompt cache another phase
warmed, and `ignore_eos` (accepted by llama-server and vLLM) makes every request generate
exactly `max_tokens`, so the work does not change with the phase.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["PROMPTS", "SEED", "chat_bodies"]

JSON = dict[str, Any]
SEED = 1234
PROMPTS = [
    "Explain what a message queue is in two sentences.",
    "List three uses of Redis.",
    "Write a haiku about a busy server.",
    "What is the difference between a thread and a process?",
    "Give one tip for writing readable Python code.",
    "Summarize why batching helps language model servers.",
    "Name three planets and one fact about each.",
    "Describe a cup of coffee to someone who has never had one.",
]
_serial = itertools.count()


def chat_bodies(n: int, max_tokens: int, phase: str) -> list[JSON]:
    """`n` chat request bodies whose prompts no earlier call has sent (a fresh tag each)."""
    tag = f"{phase}-{next(_serial)}"
    return [
        {
            "messages": [{"role": "user", "content": f"[{tag}-{i}] {PROMPTS[i % len(PROMPTS)]}"}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": SEED,
            "ignore_eos": True,
        }
        for i in range(n)
    ]
