"""How many jobs one worker runs at once: enough to fill every server's in-flight window.

A worker on the threads pool holds one request in flight per busy thread, so the pool
is sized to the sum of what its servers can batch: llama.cpp's slots (`/props`) plus a
short queue, or
LLM_MAX_INFLIGHT for vLLM, whose window then adapts at run time, plus half of that in
jobs waiting in the worker for room in the window (`waiting_jobs`). A server that does
not answer at start-up counts as LLM_MAX_INFLIGHT; the window still holds the real
number of requests in flight to what the server can take once it is up.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import WorkerSettings
from worker.errors import LLMError
from worker.llm.client import LLMClient
from worker.llm.limits import waiting_jobs

__all__ = ["ConcurrencyPlan", "plan_concurrency"]

# Seconds a start-up probe may take per server (the worker waits for it before starting).
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ConcurrencyPlan:
    """The pool size and, per server, the window it was built from and why."""

    threads: int
    servers: tuple[tuple[str, int, str], ...]

    def describe(self) -> str:
        parts = [f"{url}: {n} ({why})" for url, n, why in self.servers]
        return f"{self.threads} threads for {'; '.join(parts)}"


def plan_concurrency(settings: WorkerSettings, client: LLMClient | None = None) -> ConcurrencyPlan:
    """Ask each server what it can take in flight, once, with a short timeout."""
    own = client is None
    probe_settings = settings.model_copy(
        update={"llm_timeout": min(settings.llm_timeout, PROBE_TIMEOUT_S), "llm_retry_attempts": 1}
    )
    client = client or LLMClient(probe_settings)
    cap = settings.llm_max_inflight
    servers = []
    waiting = 0
    try:
        for endpoint in client.endpoints:
            try:
                info = client.ensure_info(endpoint)
            except LLMError as exc:
                reason = str(exc).split(":", 1)[0]
                servers.append((endpoint.url, cap, f"not ready ({reason}); LLM_MAX_INFLIGHT"))
                continue
            if info.capacity:
                window = client.window_of(info)
                why = f"{info.capacity} slot{'s' if info.capacity != 1 else ''}"
                if window > info.capacity:
                    why += f" + {window - info.capacity} queued"
                servers.append((endpoint.url, window, why))
            else:
                extra = waiting_jobs(cap, info.capacity)
                waiting += extra
                why = f"{info.backend} batches; LLM_MAX_INFLIGHT + {extra} waiting in the worker"
                servers.append((endpoint.url, cap, why))
    finally:
        if own:
            client.close()
    threads = max(1, sum(n for _, n, _ in servers)) + waiting
    return ConcurrencyPlan(threads=threads, servers=tuple(servers))
