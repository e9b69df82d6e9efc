"""The requests every phase sends: the same work, unique prompts, exactly `max_tokens` each.

Each prompt starts with its own tag, so no phase rides the prompt cache another phase
warmed, and `ignore_eos` (accepted by llama-server and vLLM) makes every request generate
exactly `max_tokens`, so the work does not change with the phase.
"""

from __future__ import annotations

import itertools
import string
from typing import Any

__all__ = ["PROMPTS", "SEED", "chat_bodies", "paired_bodies"]

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


def _body(content: str, max_tokens: int) -> JSON:
    """One chat request that generates exactly `max_tokens` from `content`."""
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": SEED,
        "ignore_eos": True,
    }


def chat_bodies(n: int, max_tokens: int, phase: str) -> list[JSON]:
    """`n` chat request bodies whose prompts no earlier call has sent (a fresh tag each)."""
    tag = f"{phase}-{next(_serial)}"
    return [_body(f"[{tag}-{i}] {PROMPTS[i % len(PROMPTS)]}", max_tokens) for i in range(n)]


def paired_bodies(rounds: int, arms: int, max_tokens: int, phase: str) -> list[JSON]:
    """Bodies for `rounds` rounds of `arms` compared measures, round by round, arm by arm.

    In a round every arm gets the same prompt, so compared arms do the same work: prompts
    differ in length, and a prefill of a few more tokens is milliseconds on a CPU, more than
    the queue overhead a pair measures. Each tag starts with a letter that differs from the
    one sent just before it, whichever order the arms go in, so no request shares more of its
    prefix with the last one than another does: a server's prompt cache then helps the arm
    that goes second in a round no more than the one that goes first.
    """
    tag = f"{phase}-{next(_serial)}"
    return [
        _body(f"[{_lead(i * arms + arm)}{i}-{tag}] {PROMPTS[i % len(PROMPTS)]}", max_tokens)
        for i in range(rounds)
        for arm in range(arms)
    ]


def _lead(n: int) -> str:
    """A letter for the n-th body: `arms` apart between rounds, so neighbours always differ."""
    return string.ascii_lowercase[n % len(string.ascii_lowercase)]
