"""The batch runner against a real Redis: the window, once-only outcomes, resume, resend, cancel.

The workers are played by the test: it takes the messages the feeder sent and stores
outcomes the way `kcw.batch_line` does (`BatchStore.record`). No LLM server is needed.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import BATCH_FEEDER_DB, RedisServer
from worker.batches import runner as runner_module
from worker.batches.feeder import Limits
from worker.batches.files import FileStore, new_file_id
from worker.batches.lines import run_line
from worker.batches.records import BatchRecord, Internal
from worker.batches.runner import BatchRunner
from worker.batches.store import WAKE_CHANNEL, BatchStore

DB = BATCH_FEEDER_DB  # no worker reads it
ENDPOINT = "/v1/chat/completions"
# A line skipped before any call needs no client: a call would fail on this context.
NO_CONTEXT: Any = None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A batch of `n` lines, the runner of a `kcw serve`, and the messages it sent."""

    def __init__(
        self, store: BatchStore, files: FileStore, n: int, timeout: float = 60, window: int = 4
    ) -> None:
        self.store, self.files, self.clock = store, files, Clock()
        self.sent: list[tuple[dict[str, Any], str]] = []
        lines = [
            json.dumps({"custom_id": f"c{i}", "method": "POST", "url": ENDPOINT, "body": {"i": i}})
            for i in range(n)
        ]
        upload = files.upload(io.BytesIO("\n".join(lines).encode()), "in.jsonl", 10**6, 1000)
        record = BatchRecord(
            id=f"batch_{new_file_id()[5:]}",
            endpoint=ENDPOINT,
            input_file_id=upload.id,
            completion_window="24h",
            created_at=int(self.clock.now),
            expires_at=int(self.clock.now) + 86400,
            kcw=Internal(output_id=new_file_id(), error_id=new_file_id()),
        )
        store.create(record)
        self.id = record.id
        self.limits = Limits(timeout, 1000, 10**6)
        self.window = window
        self.runner = self.new_runner()

    def new_runner(self) -> BatchRunner:
        def send(message: dict[str, Any], task_id: str) -> None:
            self.sent.append((message, task_id))

        window = self.window
        return BatchRunner(self.store, self.files, send, self.limits, lambda: window, self.clock)

    def tick(self) -> None:
        self.runner.tick()

    def restart(self) -> None:
        """A new `kcw serve`, once the dead one's lock has run out."""
        for feeder in self.runner.feeders.values():
            feeder.close()  # what the OS does for a killed process
        self.store.redis.delete(f"kcw:batch:{self.id}:lock")
        self.runner = self.new_runner()

    def answer(self, message: dict[str, Any], fail: bool = False) -> bool:
        outcome: dict[str, Any] = (
            {"status_code": 400, "error": {"code": "LLMRequestRejected", "message": "no"}}
            if fail
            else {"status_code": 200, "body": {"n": message["line"]}, "usage": {}}
        )
        return self.store.record(self.id, message["line"], outcome)

    def batch(self) -> BatchRecord:
        return self.store.get(self.id)

    def output(self, which: str = "output_file_id") -> list[dict[str, Any]]:
        file_id = getattr(self.batch(), which)
        text = self.files.content_path(file_id).read_text() if file_id else ""
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[BatchStore]:
    client = redis_server.client(db=DB)
    client.flushdb()
    yield BatchStore(client)
    client.close()


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path)


def test_the_window_bounds_the_lines_out_and_every_line_ends_once(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 10, window=3)
    h.tick()  # validating -> in_progress
    h.tick()

    assert [m["line"] for m, _ in h.sent] == [0, 1, 2]
    assert h.batch().status == "in_progress" and h.batch().request_counts.total == 10
    h.tick()
    assert len(h.sent) == 3  # nothing came back: nothing more is sent

    while h.batch().status == "in_progress":
        for message, _ in h.sent:
            h.answer(message, fail=message["line"] == 4)
            h.answer(message)  # delivered twice: stored once
        h.tick()

    batch = h.batch()
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (9, 1)
    out, errors = h.output(), h.output("error_file_id")
    assert sorted(item["custom_id"] for item in out) == sorted(f"c{i}" for i in range(10) if i != 4)
    assert [item["custom_id"] for item in errors] == ["c4"]
    assert store.redis.keys(f"kcw:batch:{h.id}:*") == []


def test_a_restarted_feeder_rebuilds_from_the_files_and_cuts_a_torn_line(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 7, window=5)
    h.tick()
    h.tick()
    for message, _ in h.sent[:3]:
        h.answer(message)
    h.runner.feeders[h.id].step(0)  # collect only
    output = files.content_path(h.batch().kcw.output_id)
    with output.open("ab") as sink:  # a crash in the middle of an append
        sink.write(b'{"id": "batch_req_x", "custom_id": "c6", "resp')
    h.answer(h.sent[3][0])  # stored in Redis while no one collected it; line 4 is still out

    h.restart()
    h.tick()

    assert h.batch().request_counts.completed == 4
    assert [m["line"] for m, _ in h.sent[5:]] == [5, 6]  # lines 3 and 4 are not sent again
    for message, _ in [h.sent[4], *h.sent[5:]]:
        h.answer(message)
    h.tick()
    h.tick()
    assert h.batch().status == "completed"
    assert sorted(item["custom_id"] for item in h.output()) == [f"c{i}" for i in range(7)]


def test_a_serve_killed_while_finalizing_is_finished_by_the_next(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 3, window=3)
    h.tick()
    h.tick()
    for message, _ in h.sent:
        h.answer(message)
    # It died right after switching to finalizing, before collecting the last outcomes.
    store.update(h.id, lambda b: b.model_copy(update={"status": "finalizing"}))

    h.restart()
    h.tick()

    batch = h.batch()
    assert batch.status == "completed" and batch.request_counts.completed == 3
    assert sorted(item["custom_id"] for item in h.output()) == ["c0", "c1", "c2"]


def test_a_line_with_no_outcome_is_sent_again_after_the_timeout(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 2, timeout=30)
    h.tick()
    h.tick()
    h.clock.now += 29
    h.tick()
    assert len(h.sent) == 2

    h.clock.now += 2
    h.tick()

    assert [task_id.rsplit(":", 1)[1] for _, task_id in h.sent] == ["1", "1", "2", "2"]
    h.answer(h.sent[2][0])
    h.answer(h.sent[0][0])  # the first delivery came back late after all
    h.answer(h.sent[3][0])
    h.tick()
    h.tick()
    assert h.batch().request_counts.completed == 2
    assert len(h.output()) == 2


def test_cancel_stops_lines_not_started_and_keeps_finished_ones(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 8, window=4)
    h.tick()
    h.tick()
    h.answer(h.sent[0][0])
    h.runner.feeders[h.id].step(0)

    store.update(h.id, lambda b: b.model_copy(update={"status": "cancelling"}))
    for message, _ in h.sent[1:]:
        # A worker taking these now checks the batch first: no model call, a skip marker.
        assert run_line(store, NO_CONTEXT, message, final_attempt=False).startswith("skipped")
    h.tick()

    batch = h.batch()
    assert batch.status == "cancelled"
    assert batch.request_counts.completed == 1
    assert [item["custom_id"] for item in h.output()] == ["c0"]
    assert len(h.sent) == 4
    late = run_line(store, NO_CONTEXT, h.sent[1][0], final_attempt=False)
    assert late == "skipped (batch cancelled)"
    assert store.redis.keys(f"kcw:batch:{h.id}:*") == []


def test_a_stored_outcome_is_published_once_on_the_wake_channel(
    store: BatchStore, files: FileStore
) -> None:
    h = Harness(store, files, 3, window=3)
    h.tick()
    h.tick()
    wakes = store.redis.pubsub(ignore_subscribe_messages=True)
    wakes.subscribe(WAKE_CHANNEL)
    try:
        wakes.get_message(timeout=1)  # the subscribe confirmation
        message = h.sent[0][0]
        assert h.answer(message)
        assert not h.answer(message)  # a second delivery stores nothing and wakes no one
        got = [wakes.get_message(timeout=1) for _ in range(2)]
        assert got[0] is not None and got[0]["data"] == h.id.encode()
        assert got[1] is None
    finally:
        wakes.close()
        h.runner.stop()


def test_the_running_feeder_refills_a_freed_slot_when_woken_not_on_its_tick(
    store: BatchStore, files: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an hour-long tick, only the wake can make the runner send the next line.
    monkeypatch.setattr(runner_module, "TICK_S", 3600.0)
    h = Harness(store, files, 4, window=2)
    h.tick()  # validating -> in_progress
    h.tick()
    assert len(h.sent) == 2
    h.runner.start()
    try:
        time.sleep(0.5)  # the thread's own first tick: the window is full, nothing is sent
        assert len(h.sent) == 2
        h.answer(h.sent[0][0])
        wait_for(lambda: len(h.sent) == 3, "a third line after one outcome was stored")
    finally:
        h.runner.stop()


def wait_for(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.05)
