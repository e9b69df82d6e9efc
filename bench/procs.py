"""CPU time of a process and its descendants, read from /proc.

On a CPU-only machine every cycle the queue uses (worker processes, Redis, `kcw serve`) is
taken from the LLM server, so each phase reports CPU seconds per job.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "descendants"]

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields follow the last ')'.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of `pid`, its live descendants and the children it reaped."""
    total = 0
    for index, each in enumerate(descendants(pid)):
        fields = _stat(each)
        if fields is None:
            continue
        # utime, stime at 11, 12; cutime, cstime at 13, 14 (0-based, after the name)
        total += int(fields[11]) + int(fields[12])
        if index == 0:
            total += int(fields[13]) + int(fields[14])
    return total / TICKS
