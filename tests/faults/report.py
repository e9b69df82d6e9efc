"""The fault tier's figures: one row per scenario, printed as a table at the end of the run.

Rows are also written to `fault-report.json` beside the tests' temporary files
(path in `KCW_FAULT_REPORT`, default `.run/fault-report.json`) so the README's
figures can be checked against a run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Record", "Row", "add", "rows", "table", "write"]


@dataclass
class Row:
    """What happened to the jobs of one scenario."""

    scenario: str
    submitted: int
    completed: int
    failed_clearly: int
    lost: int
    duplicated: int
    executed_more_than_once: int
    llm_requests: int
    note: str = ""
    extra: dict[str, float | int | str] = field(default_factory=dict)


_ROWS: list[Row] = []
Record = Callable[[Row], Row]


def add(row: Row) -> Row:
    _ROWS.append(row)
    return row


def rows() -> list[Row]:
    return list(_ROWS)


def table(found: list[Row]) -> str:
    head = [
        "scenario",
        "submitted",
        "completed",
        "failed clearly",
        "lost",
        "duplicated results",
        "executed more than once",
        "LLM requests",
        "note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in found:
        cells = [
            row.scenario,
            str(row.submitted),
            str(row.completed),
            str(row.failed_clearly),
            str(row.lost),
            str(row.duplicated),
            str(row.executed_more_than_once),
            str(row.llm_requests),
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(found: list[Row]) -> Path:
    path = Path(os.environ.get("KCW_FAULT_REPORT", ".run/fault-report.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(row) for row in found], indent=2) + "\n")
    return path
