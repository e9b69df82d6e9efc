"""What the LLM client hands back: token usage, completions, what a server serves, its health."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from worker.llm.backends import PROFILES, BackendName, BackendProfile

__all__ = ["Completion", "HealthReport", "ServerInfo", "Usage"]


@dataclass
class Usage:
    """Token counts, summed over every call a job made."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds spent inside successful HTTP calls to the server (queueing and retries excluded).
    llm_seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.llm_seconds += other.llm_seconds
        return self

    def as_dict(self) -> dict[str, float]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "llm_seconds": round(self.llm_seconds, 6),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """Usage as a job result carries it (older results have no llm_seconds)."""
        return cls(
            int(data.get("prompt_tokens", 0)),
            int(data.get("completion_tokens", 0)),
            float(data.get("llm_seconds", 0.0)),
        )


@dataclass
class Completion:
    """One chat completion, reduced to what jobs return."""

    text: str
    finish_reason: str
    model: str
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class ServerInfo:
    """What the server told us about itself: kind, model and context length."""

    backend: BackendName
    model: str
    models: tuple[str, ...]
    context_length: int | None
    # Requests the server runs at once (llama.cpp slots); None when it does not say (vLLM).
    capacity: int | None = None
    # llama.cpp only: "llama-server" or "llama-cpp-python" (their tokenize routes differ).
    engine: str | None = None

    @property
    def profile(self) -> BackendProfile:
        return PROFILES[self.backend]


@dataclass(frozen=True)
class HealthReport:
    """The answer of the health route, without interpretation beyond ready or not."""

    state: Literal["ready", "loading", "failed", "unreachable"]
    status_code: int | None
    detail: str
