"""OpenAI's Batch object as we store it, plus the few fields only kc-worker reads."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ACTIVE",
    "CANCELLABLE",
    "FINISHED",
    "BatchRecord",
    "Internal",
    "RequestCounts",
    "Status",
    "usage_object",
]

Status = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
# Statuses whose batch still needs `kcw serve` to do something.
ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FINISHED = frozenset({"failed", "completed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress"})


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class Internal(BaseModel):
    """What the API does not show: the output files' ids, reserved at creation."""

    output_id: str
    error_id: str
    # How the batch ends once finalizing: completed or expired.
    outcome: Literal["completed", "expired"] = "completed"


def usage_object(input_tokens: int = 0, output_tokens: int = 0) -> dict[str, Any]:
    """OpenAI's BatchUsage."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class BatchRecord(BaseModel):
    """OpenAI's Batch object (every field it documents) and our internal part."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: dict[str, Any] | None = None
    input_file_id: str
    completion_window: str
    status: Status = "validating"
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    model: str | None = None
    usage: dict[str, Any] = Field(default_factory=usage_object)
    kcw: Internal

    def public(self) -> dict[str, Any]:
        """The Batch object as the API returns it."""
        return self.model_dump(exclude={"kcw"})

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> BatchRecord:
        return cls.model_validate(json.loads(text))
