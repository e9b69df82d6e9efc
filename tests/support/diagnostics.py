"""What a failed test shows beside its traceback: the end of every process log it wrote.

The integration and fault tiers start real workers, LLM servers and Redis, each logging to a
file under the test's temporary folders. When a test fails, the tail of each log written
during the test is attached to the report, so a failure on a CI machine can be read without
rerunning it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["recent_logs"]

TAIL_CHARS = 3000
MAX_LOGS = 8


def recent_logs(
    folders: Iterable[Path], since: float, *, tail: int = TAIL_CHARS, limit: int = MAX_LOGS
) -> Iterator[tuple[str, str]]:
    """(title, the log's last `tail` characters) for each `*.log` under `folders` changed
    after `since` (a `time.time()`), the most recently written first."""
    seen: set[Path] = set()
    found: list[tuple[float, Path]] = []
    for folder in folders:
        for log in folder.rglob("*.log"):
            try:
                changed = log.stat().st_mtime
            except OSError:  # removed while we looked
                continue
            if changed >= since and log not in seen:
                seen.add(log)
                found.append((changed, log))
    for _, log in sorted(found, reverse=True)[:limit]:
        text = log.read_text(errors="replace")
        yield f"log {log.name} (last {min(tail, len(text))} of {len(text)} chars)", text[-tail:]
