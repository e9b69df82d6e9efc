"""This process's jobs right now: how many run, how many ended, and the recent rate.

`kcw top` asks each worker for these through a Celery remote-control command, so it
needs no metrics port; the numbers are this process's own, kept in memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RATE_WINDOW_S", "RECENT", "RecentJobs"]

# jobs/s is measured over this many seconds of finishes.
RATE_WINDOW_S = 10.0
# Finishes kept for the rate (a worker finishing more per window is reported at this cap).
MAX_KEPT = 100_000


class RecentJobs:
    """Counts of running and finished jobs, and the finish times of the last few seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._finished_at: deque[float] = deque(maxlen=MAX_KEPT)
        self.running = 0
        self.finished = 0

    def started(self) -> None:
        with self._lock:
            self.running += 1

    def ended(self) -> None:
        with self._lock:
            self.running -= 1
            self.finished += 1
            self._finished_at.append(self._clock())

    def rate(self, window: float = RATE_WINDOW_S) -> float:
        """Jobs finished per second over the last `window` seconds."""
        now = self._clock()
        with self._lock:
            while self._finished_at and self._finished_at[0] < now - window:
                self._finished_at.popleft()
            return len(self._finished_at) / window


RECENT = RecentJobs()
