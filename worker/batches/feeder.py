"""One batch on its way through the workers: validate, feed lines, record outcomes, finalize.

`kcw serve` calls `step` a few times a second for each batch it holds the lock of.
A step collects the outcomes the workers stored in Redis, appends them to the output
and error files (fsync), sends lines again whose outcome is overdue, and sends new
lines while the window has room. Every step is safe to repeat after a crash: the
files say which lines are done, Redis which lines are out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from worker.batches.files import FileStore
from worker.batches.outputs import OutputFiles, error_line, output_line
from worker.batches.records import FINISHED, BatchRecord, usage_object
from worker.batches.store import BatchStore
from worker.batches.validation import LineIndex, Problem, index_input, read_line
from worker.llm.types import Usage

__all__ = ["BatchFeeder", "Limits", "Sender"]

log = logging.getLogger("kcw.batches")
JSON = dict[str, Any]
Sender = Callable[[JSON, str], None]


class Limits:
    """The settings a feeder works within."""

    def __init__(self, line_timeout: float, max_lines: int, max_bytes: int) -> None:
        self.line_timeout = line_timeout
        self.max_lines = max_lines
        self.max_bytes = max_bytes


class BatchFeeder:
    """Feeds one batch's lines to the workers and records their outcomes in its files."""

    def __init__(
        self,
        batch_id: str,
        store: BatchStore,
        files: FileStore,
        send: Sender,
        limits: Limits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = batch_id
        self.store, self.files, self.send, self.limits, self.clock = (
            store,
            files,
            send,
            limits,
            clock,
        )
        self.index: LineIndex | None = None
        self.line_of: dict[str, int] = {}
        self.done: set[int] = set()
        self.sent: dict[int, float] = {}
        self.attempts: dict[int, int] = {}
        self.requeue: list[int] = []
        self.cursor = 0
        self.completed = self.failed = 0
        self.usage = Usage()
        self.source: BinaryIO | None = None
        self.outputs: OutputFiles | None = None

    @property
    def outstanding(self) -> int:
        """Lines sent whose outcome has not been collected."""
        return len(self.sent)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    # ---- The step --------------------------------------------------------------------------
    def step(self, room: int) -> bool:
        """Advance the batch; True once it is finished and needs no more steps.

        `room` is how many of this batch's lines may be out at once. Outcomes are collected
        first, so a line that just finished frees its place in this same step.
        """
        record = self.store.get(self.id)
        if record.status in FINISHED:
            self.close()
            return True
        if record.status == "validating":
            return self._validate(record)
        if self.index is None and not self._resume(record):
            return True
        if record.status == "finalizing":
            return self._finalize(record.kcw.outcome)
        self._collect(record.status)
        now = self.clock()
        if record.status == "cancelling":
            overdue = all(now - at >= self.limits.line_timeout for at in self.sent.values())
            return self._finalize("cancelled") if overdue else False
        assert self.index is not None
        if record.expires_at is not None and now >= record.expires_at:
            return self._finalize("expired")
        if len(self.done) == len(self.index):
            return self._finalize("completed")
        self._resend_overdue(now)
        self._fill(room - self.outstanding, now)
        return False

    # ---- Validating --------------------------------------------------------------------------
    def _read_index(self, record: BatchRecord) -> tuple[LineIndex, list[Problem]]:
        if not self.files.exists(record.input_file_id):
            problem = Problem(
                "missing_file",
                f"The input file {record.input_file_id} was deleted; upload it again and "
                "create a new batch.",
                param="input_file_id",
            )
            return LineIndex(), [problem]
        path = self.files.content_path(record.input_file_id)
        limits = self.limits
        return index_input(path, record.endpoint, limits.max_lines, limits.max_bytes)

    def _validate(self, record: BatchRecord) -> bool:
        index, problems = self._read_index(record)
        now = int(self.clock())

        def decide(current: BatchRecord) -> BatchRecord:
            if current.status == "cancelling":
                current.status, current.cancelled_at = "cancelled", now
            elif current.status != "validating":
                return current
            elif problems:
                current.status, current.failed_at = "failed", now
                current.errors = {"object": "list", "data": [p.as_dict() for p in problems]}
            else:
                current.status, current.in_progress_at = "in_progress", now
                current.request_counts.total = len(index)
            return current

        decided = self.store.update(self.id, decide)
        if decided.status != "in_progress":
            return True
        self._open(decided, index)
        return False

    def _open(self, record: BatchRecord, index: LineIndex) -> None:
        self.index = index
        self.line_of = {custom_id: n for n, custom_id in enumerate(index.custom_ids)}
        self.source = self.files.content_path(record.input_file_id).open("rb")
        self.outputs = OutputFiles(
            self.files.content_path(record.kcw.output_id),
            self.files.content_path(record.kcw.error_id),
        )

    # ---- Resuming after a restart ----------------------------------------------------------
    def _resume(self, record: BatchRecord) -> bool:
        """Rebuild the done lines from the files and the lines out from Redis."""
        index, problems = self._read_index(record)
        if problems:
            now = int(self.clock())

            def fail(current: BatchRecord) -> BatchRecord:
                current.status, current.failed_at = "failed", now
                current.errors = {"object": "list", "data": [p.as_dict() for p in problems]}
                return current

            self.store.update(self.id, fail)
            self.store.forget_lines(self.id)
            return False
        self._open(record, index)
        assert self.outputs is not None
        tally = self.outputs.recover()
        self.done = {self.line_of[c] for c in tally.completed | tally.failed if c in self.line_of}
        self.completed, self.failed, self.usage = (
            len(tally.completed),
            len(tally.failed),
            tally.usage,
        )
        self.store.mark_done(self.id, sorted(self.done))
        self.sent = {n: at for n, at in self.store.sent(self.id).items() if n not in self.done}
        self._save_counts()
        log.info("batch %s resumed: %d lines done, %d out", self.id, len(self.done), len(self.sent))
        return True

    # ---- Outcomes ----------------------------------------------------------------------------
    def _collect(self, status: str) -> None:
        assert self.index is not None and self.outputs is not None
        outputs: list[JSON] = []
        errors: list[JSON] = []
        done: list[int] = []
        resolved: list[int] = []
        usage = Usage()
        for line, outcome in sorted(self.store.results(self.id).items()):
            if line in self.done or line >= len(self.index) or line in done:
                resolved.append(line)
            elif outcome.get("skipped"):
                resolved.append(line)
                if status == "in_progress":
                    self.requeue.append(line)
            else:
                custom_id = self.index.custom_ids[line]
                if "error" in outcome:
                    errors.append(error_line(self.id, line, custom_id, outcome))
                else:
                    outputs.append(output_line(self.id, line, custom_id, outcome))
                    usage.add(Usage.from_dict(outcome.get("usage") or {}))
                done.append(line)
        if not done and not resolved:
            return
        self.outputs.append(outputs, errors)
        self.store.settle(self.id, done, resolved)
        self.done.update(done)
        for line in (*done, *resolved):
            self.sent.pop(line, None)
        self.completed += len(outputs)
        self.failed += len(errors)
        self.usage.add(usage)
        if done:
            self._save_counts()

    def _save_counts(self) -> None:
        completed, failed = self.completed, self.failed
        usage = usage_object(self.usage.prompt_tokens, self.usage.completion_tokens)

        def count(current: BatchRecord) -> BatchRecord:
            current.request_counts.completed = completed
            current.request_counts.failed = failed
            current.usage = usage
            return current

        self.store.update(self.id, count)

    # ---- Sending -----------------------------------------------------------------------------
    def _send(self, lines: list[int], now: float) -> None:
        assert self.index is not None and self.source is not None
        if not lines:
            return
        self.store.mark_sent(self.id, dict.fromkeys(lines, now))
        for line in lines:
            request = read_line(self.source, self.index.offsets[line])
            attempt = self.attempts.get(line, 0) + 1
            self.attempts[line] = attempt
            message = {
                "batch_id": self.id,
                "line": line,
                "custom_id": request["custom_id"],
                "url": request["url"],
                "body": request["body"],
            }
            self.send(message, f"{self.id}:{line}:{attempt}")
            self.sent[line] = now

    def _resend_overdue(self, now: float) -> None:
        overdue = [n for n, at in self.sent.items() if now - at >= self.limits.line_timeout]
        if overdue:
            log.warning("batch %s: %d lines overdue, sent again", self.id, len(overdue))
            self._send(overdue, now)

    def _fill(self, budget: int, now: float) -> None:
        assert self.index is not None
        lines: list[int] = []
        while budget > len(lines) and self.requeue:
            line = self.requeue.pop()
            if line not in self.done and line not in self.sent:
                lines.append(line)
        while budget > len(lines) and self.cursor < len(self.index):
            line = self.cursor
            self.cursor += 1
            if line not in self.done and line not in self.sent:
                lines.append(line)
        self._send(lines, now)

    # ---- Finalizing --------------------------------------------------------------------------
    def _finalize(self, outcome: str) -> bool:
        """Write the file objects and end the batch; every step of it is safe to repeat."""
        now = int(self.clock())
        if outcome != "cancelled":

            def finalizing(current: BatchRecord) -> BatchRecord | None:
                if current.status == "finalizing":
                    return None
                current.status, current.finalizing_at = "finalizing", now
                current.kcw.outcome = "expired" if outcome == "expired" else "completed"
                return current

            self.store.update(self.id, finalizing)
        self.store.close(self.id)
        self._collect("finalizing")
        record = self.store.get(self.id)
        output_id = error_id = None
        if self.completed:
            self.files.publish(record.kcw.output_id, f"{self.id}_output.jsonl", now)
            output_id = record.kcw.output_id
        if self.failed:
            self.files.publish(record.kcw.error_id, f"{self.id}_errors.jsonl", now)
            error_id = record.kcw.error_id
        self.store.forget_lines(self.id)
        completed, failed = self.completed, self.failed
        usage = usage_object(self.usage.prompt_tokens, self.usage.completion_tokens)

        def end(current: BatchRecord) -> BatchRecord:
            current.status = outcome  # type: ignore[assignment]
            setattr(current, f"{outcome}_at", now)
            current.output_file_id, current.error_file_id = output_id, error_id
            current.request_counts.completed = completed
            current.request_counts.failed = failed
            current.usage = usage
            return current

        self.store.update(self.id, end)
        self.close()
        log.info("batch %s %s: %d completed, %d failed", self.id, outcome, completed, failed)
        return True
