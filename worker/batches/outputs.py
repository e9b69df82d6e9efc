"""A batch's output and error files: appended with fsync, and read back after a restart.

The files are the record of which lines are done. After a crash the last line may be
torn; `recover` cuts it off and rebuilds the done lines, the counts and the usage.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.llm.types import Usage

__all__ = ["OutputFiles", "Tally", "error_line", "output_line", "truncate_torn_tail"]

JSON = dict[str, Any]


def _line_id(batch_id: str, line: int) -> str:
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line}".encode()).hexdigest()[:24]


def output_line(batch_id: str, line: int, custom_id: str, outcome: JSON) -> JSON:
    """A successful line in OpenAI's output shape."""
    return {
        "id": _line_id(batch_id, line),
        "custom_id": custom_id,
        "response": {
            "status_code": outcome.get("status_code", 200),
            "request_id": outcome.get("request_id") or _line_id(batch_id, line),
            "body": outcome.get("body"),
        },
        "error": None,
    }


def error_line(batch_id: str, line: int, custom_id: str, outcome: JSON) -> JSON:
    """A failed line: our error class and message, and the HTTP status it maps to."""
    error = outcome.get("error") or {}
    body_error = {
        "message": error.get("message", ""),
        "type": error.get("code", "LLMError"),
        "param": None,
        "code": error.get("code", "LLMError"),
    }
    if error.get("last_output"):
        body_error["last_output"] = error["last_output"]
    return {
        "id": _line_id(batch_id, line),
        "custom_id": custom_id,
        "response": {
            "status_code": outcome.get("status_code", 500),
            "request_id": _line_id(batch_id, line),
            "body": {"error": body_error},
        },
        "error": {"code": error.get("code", "LLMError"), "message": error.get("message", "")},
    }


def truncate_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("r+b") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        keep = 0
        step = 64 * 1024
        position = size
        while position > 0:
            start = max(0, position - step)
            handle.seek(start)
            chunk = handle.read(position - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            position = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Tally:
    """What the files hold: the custom_ids done, and the counts and usage over them."""

    completed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    usage: Usage = field(default_factory=Usage)


class OutputFiles:
    """The output and error files of one batch."""

    def __init__(self, output: Path, errors: Path) -> None:
        self.output, self.errors = output, errors

    def append(self, outputs: list[JSON], errors: list[JSON]) -> None:
        """Append lines and fsync, so they are on disk before Redis forgets them."""
        for path, lines in ((self.output, outputs), (self.errors, errors)):
            if not lines:
                continue
            data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
            with path.open("ab") as sink:
                sink.write(data.encode())
                sink.flush()
                os.fsync(sink.fileno())

    def recover(self) -> Tally:
        """Cut torn tails, then read back every line written so far."""
        tally = Tally()
        for path, done in ((self.output, tally.completed), (self.errors, tally.failed)):
            truncate_torn_tail(path)
            if not path.exists():
                continue
            with path.open("rb") as source:
                for raw in source:
                    try:
                        item = json.loads(raw)
                    except ValueError:
                        continue
                    done.add(str(item.get("custom_id")))
                    if path == self.output:
                        body = (item.get("response") or {}).get("body") or {}
                        tally.usage.add(_usage(body))
        tally.failed -= tally.completed
        return tally


def _usage(body: Any) -> Usage:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return Usage()
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
