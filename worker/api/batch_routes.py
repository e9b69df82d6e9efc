"""`/v1/batches`: create a batch from an uploaded file, read it, list them, cancel one."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, field_validator

from worker.api.deps import Services
from worker.batches.endpoints import supported_endpoints
from worker.batches.files import new_file_id
from worker.batches.records import CANCELLABLE, BatchRecord, Internal
from worker.errors import Conflict, InvalidRequest

__all__ = ["router"]

router = APIRouter(prefix="/v1/batches", tags=["batches"])
WINDOW_SECONDS = {"24h": 24 * 3600}


class CreateBatch(BaseModel):
    """The body of `POST /v1/batches`, as `client.batches.create` sends it."""

    input_file_id: str
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    output_expires_after: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > 16:
            raise ValueError("at most 16 keys")
        if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("keys are at most 64 characters and values at most 512")
        return value


@router.post("")
def create_batch(request: Request, body: CreateBatch) -> dict[str, Any]:
    """Queue a batch; it is validated, then its lines run on the workers."""
    services = Services.of(request)
    endpoints = supported_endpoints()
    if body.endpoint not in endpoints:
        raise InvalidRequest(
            f"endpoint {body.endpoint!r} is not served here; use one of: {', '.join(endpoints)}.",
            "endpoint",
            "invalid_endpoint",
        )
    if body.completion_window not in WINDOW_SECONDS:
        raise InvalidRequest(
            f"completion_window {body.completion_window!r} is not supported; use '24h'.",
            "completion_window",
            "invalid_completion_window",
        )
    if not services.files.exists(body.input_file_id):
        raise InvalidRequest(
            f"No file with id {body.input_file_id!r}; upload the input with "
            "`POST /v1/files` (purpose='batch') and pass the id it returns.",
            "input_file_id",
            "invalid_input_file",
        )
    input_file = services.files.get(body.input_file_id)
    if input_file.purpose != "batch":
        raise InvalidRequest(
            f"File {input_file.id} has purpose {input_file.purpose!r}; a batch needs a file "
            "uploaded with purpose='batch'.",
            "input_file_id",
            "invalid_input_file",
        )
    now = int(time.time())
    record = BatchRecord(
        id=f"batch_{secrets.token_hex(12)}",
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        completion_window=body.completion_window,
        created_at=now,
        expires_at=now + WINDOW_SECONDS[body.completion_window],
        metadata=body.metadata,
        kcw=Internal(output_id=new_file_id(), error_id=new_file_id()),
    )
    services.batches.create(record)
    return record.public()


@router.get("/{batch_id}")
def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
    return Services.of(request).batches.get(batch_id).public()


@router.get("")
def list_batches(
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """Batches, newest first; `after` is the last id of the previous page."""
    records, more = Services.of(request).batches.page(after, limit)
    return {
        "object": "list",
        "data": [record.public() for record in records],
        "first_id": records[0].id if records else None,
        "last_id": records[-1].id if records else None,
        "has_more": more,
    }


@router.post("/{batch_id}/cancel")
def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
    """Stop a batch: lines not yet started never start; finished lines are kept."""
    now = int(time.time())

    def cancel(current: BatchRecord) -> BatchRecord | None:
        if current.status == "cancelling":
            return None
        if current.status not in CANCELLABLE:
            raise Conflict(
                f"Batch {batch_id} is {current.status} and cannot be cancelled; only a "
                "validating or in_progress batch can be.",
                "batch_id",
                "batch_not_cancellable",
            )
        current.status, current.cancelling_at = "cancelling", now
        return current

    return Services.of(request).batches.update(batch_id, cancel).public()
