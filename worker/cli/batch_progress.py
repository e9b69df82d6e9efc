"""`kcw batch submit --wait`: a live progress bar until the batch ends.

On a terminal, a `rich` bar with lines done, failed, the total, generated tokens per
second and the time left; elsewhere one line whenever the counts change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from worker.errors import JobWaitTimedOut

__all__ = ["FINISHED", "describe", "follow"]

JSON = dict[str, Any]
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})


def describe(batch: JSON, rate: float | None = None) -> str:
    counts = batch.get("request_counts") or {}
    text = (
        f"{batch['status']}: {counts.get('completed', 0)} done, {counts.get('failed', 0)} failed"
        f" of {counts.get('total', 0)}"
    )
    return text if rate is None else f"{text}, {rate:.1f} tok/s"


def follow(
    fetch: Callable[[], JSON],
    err: TextIO,
    timeout: float,
    poll: float = 1.0,
) -> JSON:
    """Poll the batch until it ends; show progress on `err`."""
    started = time.monotonic()
    first_tokens = None
    console = Console(file=err)
    live = err.isatty()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} done, {task.fields[failed]} failed"),
        TextColumn("{task.fields[rate]:.1f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    last = ""
    with Progress(*columns, console=console, disable=not live) as progress:
        task = progress.add_task("validating", total=None, failed=0, rate=0.0)
        while True:
            batch = fetch()
            counts = batch.get("request_counts") or {}
            tokens = int((batch.get("usage") or {}).get("output_tokens", 0))
            elapsed = time.monotonic() - started
            if first_tokens is None:
                first_tokens = tokens
            rate = (tokens - first_tokens) / elapsed if elapsed > 0 else 0.0
            progress.update(
                task,
                description=batch["status"],
                total=counts.get("total") or None,
                completed=counts.get("completed", 0) + counts.get("failed", 0),
                failed=counts.get("failed", 0),
                rate=rate,
            )
            line = describe(batch)
            if not live and line != last:
                err.write(f"  {batch['id']}  {elapsed:6.1f}s  {line}\n")
                last = line
            if batch["status"] in FINISHED:
                return batch
            if elapsed > timeout:
                raise JobWaitTimedOut(
                    f"batch {batch['id']} is still {batch['status']} after {timeout:g}s; "
                    f"check later with `kcw batch status {batch['id']}`"
                )
            time.sleep(poll)
