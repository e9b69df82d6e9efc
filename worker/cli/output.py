"""What `kcw` prints: health checks, a live line while waiting, and a job as JSON."""

from __future__ import annotations

import json
from typing import Any, TextIO

from worker.cli import exit_codes
from worker.client import UNFINISHED, Job
from worker.config import WorkerSettings
from worker.ops.health import Check, check_redis

__all__ = ["print_checks", "require_redis", "show_job", "wait_visibly"]

SPINNER = "|/-\\"
MARKS = {"ok": "[ok]  ", "warn": "[warn]", "wait": "[wait]", "fail": "[FAIL]"}


def print_checks(checks: list[Check], out: TextIO) -> None:
    for check in checks:
        out.write(f"{MARKS[check.status]} {check.name:<11} {check.detail}\n")
        if check.fix and check.status != "ok":
            out.write(f"       {'':<11} fix: {check.fix}\n")


class _LiveLine:
    """The waiting line: redrawn in place on a terminal, one line per change otherwise."""

    def __init__(self, job: Job, err: TextIO) -> None:
        self.job, self.err = job, err
        self.live = err.isatty()
        self.width = 0
        self.last = ""
        self.ticks = 0

    def __call__(self, elapsed: float, status: str) -> None:
        if self.live:
            line = f"{SPINNER[self.ticks % 4]} {self.job.id}  {elapsed:5.1f}s  {status}"
            self.err.write("\r" + line.ljust(self.width))
            self.err.flush()
            self.width = len(line)
        elif status != self.last:
            self.err.write(f"  {self.job.id}  {elapsed:5.1f}s  {status}\n")
        self.last = status
        self.ticks += 1

    def clear(self) -> None:
        if self.live:
            self.err.write("\r" + " " * self.width + "\r")


def require_redis(settings: WorkerSettings, err: TextIO) -> bool:
    """Check Redis before Celery would retry against it for a long while."""
    check = check_redis(settings)
    if not check.ok:
        print_checks([check], err)
    return check.ok


def wait_visibly(job: Job, timeout: float, err: TextIO) -> None:
    """Wait for the job: a live line on a terminal, one line per change otherwise."""
    line = _LiveLine(job, err)
    try:
        job.wait(timeout, on_tick=line)
    finally:
        line.clear()


def _dump(value: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def show_job(job: Job, out: TextIO) -> int:
    """Print a job as JSON: its result, its error, or its state; exit 1 if it failed."""
    state = job.status()
    if state == "SUCCESS":
        _dump({"id": job.id, "state": state, "result": job.async_result.result}, out)
        return exit_codes.OK
    if state == "FAILURE":
        exc = job.error()
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        last_output = getattr(exc, "last_output", None)
        if last_output:
            error["last_output"] = last_output
        _dump({"id": job.id, "state": state, "error": error}, out)
        return exit_codes.FAILED
    shown: dict[str, Any] = {"id": job.id, "state": state}
    info = job.info()
    if isinstance(info, dict):
        shown["info"] = {k: v for k, v in info.items() if k != "chunk_ids"}
    elif isinstance(info, BaseException):
        # A job in RETRY carries the error that made it wait.
        shown["retrying_because"] = f"{type(info).__name__}: {info}"
    _dump(shown, out)
    return exit_codes.OK if state in UNFINISHED else exit_codes.FAILED
