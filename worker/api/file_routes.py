"""`/v1/files`: upload a batch input file, list, read, download and delete files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from worker.api.deps import Services
from worker.errors import InvalidRequest

__all__ = ["router"]

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("")
async def upload_file(
    request: Request,
    file: Annotated[UploadFile, File(description="a JSONL file of batch requests")],
    purpose: Annotated[str, Form(description="must be `batch`")],
) -> dict[str, Any]:
    """Upload a batch input file (multipart, as `client.files.create(purpose="batch")` sends)."""
    services = Services.of(request)
    if purpose != "batch":
        raise InvalidRequest(
            f"purpose {purpose!r} is not served here; upload batch input files with "
            "purpose='batch'.",
            "purpose",
            "invalid_purpose",
        )
    settings = services.settings
    obj = await run_in_threadpool(
        services.files.upload,
        file.file,
        file.filename or "upload.jsonl",
        settings.batch_max_bytes,
        settings.batch_max_lines,
    )
    return obj.model_dump()


@router.get("")
def list_files(
    request: Request,
    purpose: str | None = None,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> dict[str, Any]:
    """Every file, newest first (`order=asc` for oldest first)."""
    objs = Services.of(request).files.list(purpose, order, after)
    page = objs[:limit]
    return {
        "object": "list",
        "data": [obj.model_dump() for obj in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": len(objs) > limit,
    }


@router.get("/{file_id}")
def get_file(request: Request, file_id: str) -> dict[str, Any]:
    return Services.of(request).files.get(file_id).model_dump()


@router.get("/{file_id}/content")
def file_content(request: Request, file_id: str) -> StreamingResponse:
    """The file's bytes, streamed."""
    files = Services.of(request).files
    obj = files.get(file_id)
    return StreamingResponse(
        files.read(file_id),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{obj.filename}"'},
    )


@router.delete("/{file_id}")
def delete_file(request: Request, file_id: str) -> dict[str, Any]:
    Services.of(request).files.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
