"""How many requests one worker keeps in flight to one LLM server: an AIMD window.

The window starts at the server's capacity (llama.cpp's slots from `/props`, or
LLM_MAX_INFLIGHT for a server that batches without a fixed slot count, like vLLM).
Signs of overload (HTTP 429/503, a timeout, requests waiting in vLLM's queue)
halve it; each success grows it by about one request per window of successes,
never past the capacity. This is TCP's congestion rule applied to an LLM server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AdaptiveLimit", "waiting_jobs", "window_for", "window_for_slots"]


def window_for_slots(slots: int) -> int:
    """Requests to keep in flight for a server with `slots`: the slots plus a short queue.

    A quarter more than the slots (from 4 slots up) means a slot that frees up starts the
    next request at once, instead of waiting for the worker's round trip through Redis.
    One slot gets no queue: a queued request would wait a whole request's time, which
    counts against LLM_TIMEOUT.
    """
    return slots + slots // 4 if slots >= 4 else max(1, slots)


def window_for(slots: int | None, cap: int) -> int:
    """The window for a server with `slots` (None: it batches without a fixed count, like
    vLLM), never past `cap` (LLM_MAX_INFLIGHT)."""
    return min(window_for_slots(slots), cap) if slots else cap


def waiting_jobs(window: int, slots: int | None) -> int:
    """Jobs a worker holds, on top of `window`, waiting for room in a server's window.

    A server with slots already queues a quarter more itself (`window_for_slots`). One that
    batches without a fixed count (vLLM) runs its requests in step, so a whole window ends
    at once; half a window more waiting in the worker starts the next wave at once, instead
    of after the worker's round trips through Redis for each job.
    """
    return 0 if slots else window // 2


@dataclass
class AdaptiveLimit:
    """An additive-increase, multiplicative-decrease window between 1 and `capacity`."""

    capacity: int
    window: float = 0.0
    decrease_factor: float = 0.5

    def __post_init__(self) -> None:
        self.capacity = max(1, int(self.capacity))
        if self.window <= 0:
            self.window = float(self.capacity)
        self.window = min(max(self.window, 1.0), float(self.capacity))

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (at least 1, so work always progresses)."""
        return max(1, math.floor(self.window))

    def set_capacity(self, capacity: int) -> None:
        """The server told us its capacity: start the window there."""
        self.capacity = max(1, int(capacity))
        self.window = float(self.capacity)

    def on_success(self) -> None:
        """A request finished normally: grow by 1/window (about +1 per full window)."""
        if self.window < self.capacity:
            self.window = min(float(self.capacity), self.window + 1.0 / self.window)

    def on_overload(self) -> None:
        """The server pushed back (429, 503, timeout, queueing): shrink multiplicatively."""
        self.window = max(1.0, self.window * self.decrease_factor)

    def cap_at(self, running: int) -> None:
        """The server queues what it cannot run: no point keeping more than `running`."""
        self.window = max(1.0, min(self.window, float(running)))
