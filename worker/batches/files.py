"""File objects as OpenAI serves them: content and a JSON metadata file side by side.

Everything lives under `<KCW_DATA_DIR>/files/`: `<id>` holds the bytes and `<id>.json`
the file object. Uploads are written in chunks as they arrive, fsynced and renamed
into place, so a crash never leaves a half file under a listed id.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel

from worker.errors import InvalidRequest, NotFound, PayloadTooLarge

__all__ = ["CHUNK", "FileObject", "FileStore", "new_file_id", "write_atomically"]

CHUNK = 1024 * 1024
_ID = re.compile(r"^file-[A-Za-z0-9_-]{1,64}$")
Purpose = Literal["batch", "batch_output"]


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with tmp.open("wb") as sink:
        sink.write(data)
        sink.flush()
        os.fsync(sink.fileno())
    os.replace(tmp, path)


class FileObject(BaseModel):
    """OpenAI's `File` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: Purpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileStore:
    """The file objects of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "files"
        self.dir.mkdir(parents=True, exist_ok=True)

    def content_path(self, file_id: str) -> Path:
        if not _ID.match(file_id):
            raise NotFound(
                f"No file with id {file_id!r}: file ids look like file-abc123.", "file_id"
            )
        return self.dir / file_id

    def _meta_path(self, file_id: str) -> Path:
        return self.content_path(file_id).with_name(f"{file_id}.json")

    def get(self, file_id: str) -> FileObject:
        try:
            text = self._meta_path(file_id).read_text()
        except FileNotFoundError:
            raise NotFound(
                f"No file with id {file_id!r}; `GET /v1/files` lists the files there are.",
                "file_id",
            ) from None
        return FileObject.model_validate_json(text)

    def exists(self, file_id: str) -> bool:
        return _ID.match(file_id) is not None and self._meta_path(file_id).exists()

    def save(self, obj: FileObject) -> FileObject:
        write_atomically(self._meta_path(obj.id), obj.model_dump_json().encode())
        return obj

    def upload(self, source: BinaryIO, filename: str, max_bytes: int, max_lines: int) -> FileObject:
        """Copy an upload in chunks into a new batch input file, within the limits."""
        file_id = new_file_id()
        final = self.content_path(file_id)
        part = final.with_name(f".{file_id}.part")
        size = lines = 0
        last = b"\n"
        try:
            with part.open("wb") as sink:
                for chunk in iter(lambda: source.read(CHUNK), b""):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"The file is larger than {max_bytes} bytes (BATCH_MAX_BYTES); "
                            "split it into several batches.",
                            "file",
                        )
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    if lines > max_lines:
                        raise InvalidRequest(
                            f"The file has more than {max_lines} lines (BATCH_MAX_LINES); "
                            "split it into several batches.",
                            "file",
                            "too_many_lines",
                        )
                    sink.write(chunk)
                sink.flush()
                os.fsync(sink.fileno())
            if last != b"\n" and lines + 1 > max_lines:
                raise InvalidRequest(
                    f"The file has more than {max_lines} lines (BATCH_MAX_LINES); split it.",
                    "file",
                    "too_many_lines",
                )
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        obj = FileObject(
            id=file_id, bytes=size, created_at=int(time.time()), filename=filename, purpose="batch"
        )
        return self.save(obj)

    def publish(self, file_id: str, filename: str, created_at: int) -> FileObject:
        """Make a file written in place (a batch's output) a listed file object; idempotent."""
        path = self.content_path(file_id)
        path.touch(exist_ok=True)
        obj = FileObject(
            id=file_id,
            bytes=path.stat().st_size,
            created_at=created_at,
            filename=filename,
            purpose="batch_output",
        )
        return self.save(obj)

    def list(
        self, purpose: str | None = None, order: str = "desc", after: str | None = None
    ) -> list[FileObject]:
        objs = []
        for meta in self.dir.glob("file-*.json"):
            try:
                obj = FileObject.model_validate_json(meta.read_text())
            except (OSError, ValueError):
                continue  # deleted meanwhile
            if purpose is None or obj.purpose == purpose:
                objs.append(obj)
        objs.sort(key=lambda o: (o.created_at, o.id), reverse=order != "asc")
        if after:
            ids = [o.id for o in objs]
            objs = objs[ids.index(after) + 1 :] if after in ids else []
        return objs

    def read(self, file_id: str) -> Iterator[bytes]:
        """The content in chunks (the file object must exist)."""
        self.get(file_id)
        with self.content_path(file_id).open("rb") as source:
            yield from iter(lambda: source.read(CHUNK), b"")

    def delete(self, file_id: str) -> None:
        self.get(file_id)
        self._meta_path(file_id).unlink(missing_ok=True)
        self.content_path(file_id).unlink(missing_ok=True)

    @staticmethod
    def dump(obj: FileObject) -> dict[str, object]:
        return json.loads(obj.model_dump_json())  # type: ignore[no-any-return]
