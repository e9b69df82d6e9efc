"""Reading a batch input file: every line checked before anything runs, and an index of lines.

A file with any bad line fails the whole batch with each problem's line number and
reason (OpenAI's `errors.data`); a good one yields the byte offset and `custom_id` of
each request, so the feeder reads one line at a time instead of holding the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from worker.batches.endpoints import kind_of
from worker.errors import InvalidJobInput

__all__ = ["MAX_PROBLEMS", "LineIndex", "Problem", "index_input", "read_line"]

# Problems reported per file; the rest are counted in the last one.
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    """One reason the file is refused: OpenAI's BatchError."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line, "param": self.param}


@dataclass
class LineIndex:
    """Where each request of a valid file starts, and its custom_id (in file order)."""

    offsets: list[int] = field(default_factory=list)
    custom_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def _check(request: Any, number: int, endpoint: str, seen: dict[str, int]) -> Problem | None:
    if not isinstance(request, dict):
        return Problem("invalid_request", f"Line {number} is not a JSON object.", number)
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return Problem(
            "missing_custom_id",
            f"Line {number} has no custom_id; give each request a unique string custom_id.",
            number,
            "custom_id",
        )
    if custom_id in seen:
        return Problem(
            "duplicate_custom_id",
            f"Line {number} repeats the custom_id {custom_id!r} of line {seen[custom_id]}; "
            "each request needs its own custom_id.",
            number,
            "custom_id",
        )
    seen[custom_id] = number
    method = request.get("method")
    if method != "POST":
        return Problem(
            "invalid_method",
            f"Line {number} has method {method!r}; batch requests must use POST.",
            number,
            "method",
        )
    url = request.get("url")
    if url != endpoint:
        return Problem(
            "mismatched_url",
            f"Line {number} has url {url!r}, but the batch's endpoint is {endpoint!r}; every "
            "line's url must be the batch's endpoint.",
            number,
            "url",
        )
    body = request.get("body")
    if not isinstance(body, dict):
        return Problem(
            "invalid_body",
            f"Line {number}'s body is {type(body).__name__}, not a JSON object.",
            number,
            "body",
        )
    kind = kind_of(endpoint)
    if kind is not None:
        try:
            kind.parse(body)
        except InvalidJobInput as exc:
            return Problem("invalid_body", f"Line {number}: {exc}", number, "body")
    return None


def index_input(
    path: Path, endpoint: str, max_lines: int, max_bytes: int
) -> tuple[LineIndex, list[Problem]]:
    """Check every line of `path` against `endpoint`; the index, or the problems found."""
    index = LineIndex()
    problems: list[Problem] = []
    if path.stat().st_size > max_bytes:
        return index, [
            Problem(
                "file_too_large",
                f"The input file is larger than {max_bytes} bytes (BATCH_MAX_BYTES); split it.",
            )
        ]
    seen: dict[str, int] = {}
    offset = 0
    with path.open("rb") as source:
        for number, raw in enumerate(source, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue  # a blank line, such as a trailing one, is not a request
            if len(index) + len(problems) >= max_lines:
                problems.append(
                    Problem(
                        "too_many_lines",
                        f"The file has more than {max_lines} requests (BATCH_MAX_LINES); "
                        "split it into several batches.",
                        number,
                    )
                )
                break
            try:
                request = json.loads(raw)
            except ValueError as exc:
                problem: Problem | None = Problem(
                    "invalid_json",
                    f"Line {number} is not valid JSON ({exc}); each line must be one JSON object.",
                    number,
                )
            else:
                problem = _check(request, number, endpoint, seen)
            if problem is not None:
                problems.append(problem)
                if len(problems) >= MAX_PROBLEMS:
                    break
            elif not problems:
                index.offsets.append(start)
                index.custom_ids.append(request["custom_id"])
    if not problems and not index.offsets:
        problems.append(Problem("empty_file", "The input file has no requests."))
    return (LineIndex(), problems) if problems else (index, [])


def read_line(source: BinaryIO, offset: int) -> dict[str, Any]:
    """The request that starts at `offset` (from a valid file's index)."""
    source.seek(offset)
    value: dict[str, Any] = json.loads(source.readline())
    return value
