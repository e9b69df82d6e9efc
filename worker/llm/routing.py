"""Several LLM servers behind one client: the least-loaded healthy one gets each request.

Every server has an in-flight window (`worker.llm.limits.AdaptiveLimit`). A request waits
for a free place in some window, and goes to the server with the lowest load
(in flight / window). A server that cannot be reached, or answers 502/503/504, is
marked down and skipped until its `/health` answers 200 again; it is probed every
LLM_HEALTH_INTERVAL seconds by the threads that are waiting anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from worker import deadline
from worker.llm.limits import AdaptiveLimit
from worker.llm.types import ServerInfo

if TYPE_CHECKING:
    import httpx
    import openai

__all__ = ["Endpoint", "Outcome", "ServerPool"]

# ok: served; overload: pushed back (429, timeout); down: unreachable or 502-504;
# neutral: answered, but the request was refused or failed on our side.
Outcome = Literal["ok", "overload", "down", "neutral"]


@dataclass(eq=False)
class Endpoint:
    """One LLM server: its pooled clients, what it serves, and its load."""

    url: str
    http: httpx.Client
    sdk: openai.OpenAI
    limit: AdaptiveLimit
    info: ServerInfo | None = None
    in_flight: int = 0
    down: bool = False
    down_reason: str = ""
    next_probe: float = 0.0
    next_metrics: float = 0.0
    info_lock: threading.Lock = field(default_factory=threading.Lock)
    routes: dict[str, httpx.URL] = field(default_factory=dict)

    def route(self, path: str) -> httpx.URL:
        """The absolute URL of `path` on this server, built once: httpx parses a relative
        path against its base URL on every request otherwise."""
        url = self.routes.get(path)
        if url is None:
            import httpx

            url = self.routes[path] = httpx.URL(self.url.rstrip("/") + path)
        return url

    @property
    def load(self) -> float:
        return self.in_flight / self.limit.limit


class ServerPool:
    """Chooses a server for each request and keeps count of what is in flight where.

    It is the only writer of a server's window, in flight count and health.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        probe: Callable[[Endpoint], bool],
        probe_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("a server pool needs at least one server")
        self.endpoints = list(endpoints)
        self._probe = probe
        self._interval = probe_interval
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(
        self, *, limited: bool = True, exclude: Collection[Endpoint] = ()
    ) -> Endpoint | None:
        """A server to send one request to, counted in flight; None when all are excluded.

        Waits while every healthy server's window is full. When no server is healthy,
        the one marked down longest ago is tried anyway (the caller backs off).
        """
        while True:
            deadline.check()  # a job waiting for a free slot still has a time limit
            self._probe_due()
            with self._cond:
                candidates = [ep for ep in self.endpoints if ep not in exclude]
                if not candidates:
                    return None
                healthy = [ep for ep in candidates if not ep.down]
                if not healthy:
                    chosen = min(candidates, key=lambda ep: ep.next_probe)
                    chosen.in_flight += 1
                    return chosen
                free = (
                    healthy
                    if not limited
                    else [ep for ep in healthy if ep.in_flight < ep.limit.limit]
                )
                if free:
                    chosen = min(free, key=lambda ep: (ep.load, ep.in_flight))
                    chosen.in_flight += 1
                    return chosen
                self._cond.wait(timeout=self._wait_timeout())

    def release(self, endpoint: Endpoint, outcome: Outcome, reason: str = "") -> None:
        """The request is over: update the server's window and health, wake a waiter."""
        with self._cond:
            endpoint.in_flight = max(0, endpoint.in_flight - 1)
            if outcome == "down":
                self._mark_down(endpoint, reason)
            else:
                if outcome == "ok":
                    endpoint.limit.on_success()
                elif outcome == "overload":
                    endpoint.limit.on_overload()
                endpoint.down = False
            self._cond.notify_all()

    def has_alternative(self, exclude: Collection[Endpoint]) -> bool:
        """Is there a healthy server not yet tried for this request?"""
        with self._cond:
            return any(not ep.down and ep not in exclude for ep in self.endpoints)

    def mark_down(self, endpoint: Endpoint, reason: str) -> None:
        with self._cond:
            self._mark_down(endpoint, reason)
            self._cond.notify_all()

    def set_capacity(self, endpoint: Endpoint, window: int) -> None:
        """The server said what it can take: start its window there and wake the waiters."""
        with self._cond:
            endpoint.limit.set_capacity(window)
            self._cond.notify_all()

    def cap_at(self, endpoint: Endpoint, running: int) -> None:
        """The server queues what it cannot run: keep no more than `running` in flight."""
        with self._cond:
            endpoint.limit.cap_at(running)
            self._cond.notify_all()

    def _mark_down(self, endpoint: Endpoint, reason: str) -> None:
        if not endpoint.down:
            endpoint.next_probe = self._clock() + self._interval
        endpoint.down = True
        endpoint.down_reason = reason
        # It may come back with another model or slot count: ask again then.
        endpoint.info = None

    def _wait_timeout(self) -> float:
        now = self._clock()
        due = [ep.next_probe - now for ep in self.endpoints if ep.down]
        return max(0.05, min([1.0, *due]))

    def _probe_due(self) -> None:
        """Probe `/health` of the down servers whose turn has come (outside the lock)."""
        now = self._clock()
        with self._cond:
            due = [ep for ep in self.endpoints if ep.down and ep.next_probe <= now]
            for ep in due:
                ep.next_probe = now + self._interval  # one prober per turn
        for ep in due:
            if self._probe(ep):
                with self._cond:
                    ep.down = False
                    ep.down_reason = ""
                    self._cond.notify_all()
