"""The loop inside `kcw serve` that feeds every unfinished batch.

It steps on every tick, and at once when a worker stores a line's outcome (a Redis
publish), so a freed slot is refilled without waiting for the tick. It takes over any
unfinished batch no one holds (a Redis lock with a TTL, renewed each step), so a batch
whose `kcw serve` died is resumed by the next one, and two never feed the same batch.
The window bounds the lines queued or running over all its batches, so interactive jobs
never wait behind a whole batch.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from worker.batches.feeder import BatchFeeder, Limits, Sender
from worker.batches.files import FileStore
from worker.batches.store import WAKE_CHANNEL, BatchStore
from worker.broker import queue_full_message, refused_for_memory, send_options
from worker.config import ApiSettings

__all__ = [
    "LINE_TASK",
    "BatchRunner",
    "celery_sender",
    "make_runner",
    "window_for",
    "with_margin",
]

log = logging.getLogger("kcw.batches")
LINE_TASK = "kcw.batch_line"
TICK_S = 0.25
# How often a long wait looks at the stop flag.
STOP_CHECK_S = 0.5
LOCK_TTL_MS = 30_000
# Lines queued beyond what the servers run at once, so a freed slot never waits for us:
# a share of the window (servers that batch finish many lines at once), and at least a few.
MARGIN_SHARE = 4
MIN_MARGIN = 2
# Wakes that arrive while one step runs are drained, so a burst costs one more step.
MAX_DRAINED = 10_000


def window_for(settings: ApiSettings) -> int:
    """BATCH_WINDOW, or what the LLM servers take in flight plus a margin of queued lines."""
    if settings.batch_window:
        return settings.batch_window
    from worker.llm.capacity import plan_concurrency

    return with_margin(plan_concurrency(settings).threads)


def with_margin(in_flight: int) -> int:
    """The window for servers that run `in_flight` requests at once."""
    return in_flight + max(MIN_MARGIN, in_flight // MARGIN_SHARE)


def celery_sender(app: Any) -> Sender:
    """Send a line as a `kcw.batch_line` job through a Celery app configured like the workers."""

    def send(message: dict[str, Any], task_id: str) -> None:
        app.send_task(LINE_TASK, args=[message], task_id=task_id, **send_options(message))

    return send


class BatchRunner:
    """Claims unfinished batches and steps each one; runs in a thread of `kcw serve`."""

    def __init__(
        self,
        store: BatchStore,
        files: FileStore,
        send: Sender,
        limits: Limits,
        window: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.files, self.send, self.limits = store, files, send, limits
        self.clock = clock
        self._window_of = window
        self._window: int | None = None
        self.token = secrets.token_hex(8)
        self.feeders: dict[str, BatchFeeder] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._turn = 0

    @property
    def window(self) -> int:
        if self._window is None:
            self._window = max(1, self._window_of())
            log.info("batch window: %d lines queued or running at once", self._window)
        return self._window

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kcw-batches", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for batch_id, feeder in list(self.feeders.items()):
            feeder.close()
            with contextlib.suppress(redis.RedisError):
                self.store.release(batch_id, self.token)
        self.feeders.clear()

    def _run(self) -> None:
        wakes: Any = None
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:
                if refused_for_memory(exc):
                    log.warning("batch lines wait: %s", queue_full_message(exc))
                elif isinstance(exc, redis.RedisError):
                    log.warning("Redis error while feeding batches (%s); trying again", exc)
                else:
                    log.exception("unexpected error while feeding batches")
                self._stop.wait(2.0)
            wakes = self._wait(wakes)
        if wakes is not None:
            with contextlib.suppress(redis.RedisError):
                wakes.close()

    def _wait(self, wakes: Any) -> Any:
        """Sleep until a line's outcome is stored or the tick is up; returns the subscription.

        Without a subscription (Redis down, or it broke) it sleeps the tick and tries to
        subscribe again next time, so the runner never depends on the channel.
        """
        try:
            if wakes is None:
                wakes = self.store.redis.pubsub(ignore_subscribe_messages=True)
                wakes.subscribe(WAKE_CHANNEL)
            deadline = time.monotonic() + TICK_S
            while not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if wakes.get_message(timeout=min(left, STOP_CHECK_S)) is not None:
                    for _ in range(MAX_DRAINED):
                        if wakes.get_message(timeout=0) is None:
                            break
                    break
            return wakes
        except redis.RedisError:
            if wakes is not None:
                with contextlib.suppress(redis.RedisError):
                    wakes.close()
            self._stop.wait(TICK_S)
            return None

    def tick(self) -> None:
        """Claim what no one feeds, then step every batch held."""
        for batch_id in self.store.active_ids():
            if batch_id not in self.feeders and self.store.acquire(
                batch_id, self.token, LOCK_TTL_MS
            ):
                log.info("feeding batch %s", batch_id)
                self.feeders[batch_id] = self._feeder(batch_id)
        ids = list(self.feeders)
        self._turn = (self._turn + 1) % max(1, len(ids))
        for batch_id in ids[self._turn :] + ids[: self._turn]:
            self._step(batch_id)

    def _feeder(self, batch_id: str) -> BatchFeeder:
        return BatchFeeder(batch_id, self.store, self.files, self.send, self.limits, self.clock)

    def _step(self, batch_id: str) -> None:
        feeder = self.feeders[batch_id]
        if not self.store.renew(batch_id, self.token, LOCK_TTL_MS):
            log.warning("lost the lock of batch %s; another kcw serve feeds it", batch_id)
            feeder.close()
            del self.feeders[batch_id]
            return
        others = sum(f.outstanding for other, f in self.feeders.items() if other != batch_id)
        try:
            finished = feeder.step(self.window - others)
        except Exception:
            log.exception("batch %s: step failed; trying again", batch_id)
            feeder.close()
            # A fresh feeder rebuilds from the files and Redis on the next tick.
            self.feeders[batch_id] = self._feeder(batch_id)
            return
        if finished:
            feeder.close()
            del self.feeders[batch_id]
            self.store.release(batch_id, self.token)


def make_runner(
    settings: ApiSettings, files: FileStore, client: redis.Redis, app: Any
) -> BatchRunner:
    """The runner for `kcw serve`, from its settings."""
    limits = Limits(settings.line_timeout, settings.batch_max_lines, settings.batch_max_bytes)
    return BatchRunner(
        BatchStore(client), files, celery_sender(app), limits, lambda: window_for(settings)
    )
