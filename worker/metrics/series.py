"""Every series kc-worker publishes, in one place, named the Prometheus way (units in the name).

Labels stay few and bounded: the job kind, the outcome or error class, the model and the
LLM server's URL. No job, batch or user ids, so the number of series does not grow with use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

__all__ = [
    "BATCH_LINES",
    "GENERATION_TOKENS",
    "JOBS_FAILED",
    "JOBS_REDELIVERED",
    "JOBS_RETRIED",
    "JOBS_SKIPPED",
    "JOBS_SUCCEEDED",
    "JOB_DURATION",
    "JOB_LLM",
    "JOB_QUEUE_WAIT",
    "LLM_REQUESTS",
    "PROMPT_TOKENS",
    "SWITCH",
    "ServerState",
    "count",
    "declare",
    "record_metrics",
    "watch_servers",
]

# Seconds, from a 1-token job on a fast server (ms) to a long summary on a CPU box (minutes).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS_SUCCEEDED = Counter("kcw_jobs_succeeded", "Jobs that ended with a result.", ["kind"])
JOBS_FAILED = Counter(
    "kcw_jobs_failed", "Jobs that ended failed, by error class.", ["kind", "error"]
)
JOBS_RETRIED = Counter(
    "kcw_jobs_retried", "Retries scheduled (the server was down or busy).", ["kind", "error"]
)
JOBS_REDELIVERED = Counter(
    "kcw_jobs_redelivered",
    "Jobs delivered again after a worker died or the visibility timeout passed.",
    ["kind"],
)
JOBS_SKIPPED = Counter(
    "kcw_jobs_skipped", "Deliveries not run because the job already had a result.", ["kind"]
)
JOB_QUEUE_WAIT = Histogram(
    "kcw_job_queue_wait_seconds", "From send to start, per job.", ["kind"], buckets=BUCKETS
)
JOB_LLM = Histogram(
    "kcw_job_llm_seconds", "Time inside LLM calls, per job.", ["kind"], buckets=BUCKETS
)
JOB_DURATION = Histogram(
    "kcw_job_duration_seconds", "From start to end of a job's run.", ["kind"], buckets=BUCKETS
)
PROMPT_TOKENS = Counter(
    "kcw_prompt_tokens",
    "Prompt tokens of finished jobs, from the servers' usage.",
    ["kind", "model"],
)
GENERATION_TOKENS = Counter(
    "kcw_generation_tokens",
    "Generated tokens of finished jobs, from the servers' usage.",
    ["kind", "model"],
)
LLM_REQUESTS = Counter(
    "kcw_llm_requests",
    "Requests to each LLM server by status class (2xx, 4xx, 5xx, unreachable).",
    ["server", "status"],
)
BATCH_LINES = Counter(
    "kcw_batch_lines", "Batch API lines run by the workers, by outcome.", ["outcome"]
)


class _Switch:
    """Whether this process records its series: off with WORKER_METRICS_PORT=0."""

    on = True


SWITCH = _Switch()


def count(counter: Counter, *labels: str) -> None:
    """Add one to `counter`'s series of `labels`, unless this process records no metrics."""
    if SWITCH.on:
        counter.labels(*labels).inc()


def record_metrics(on: bool) -> None:
    """Turn recording on or off for this process (its forks inherit the choice)."""
    SWITCH.on = on


@dataclass(frozen=True)
class ServerState:
    """One LLM server as a worker process sees it now."""

    url: str
    window: int
    in_flight: int
    healthy: bool


class _Servers(Collector):
    """Per-server gauges read at scrape time from whatever `watch_servers` was given."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[ServerState]] | None = None

    def collect(self) -> Iterator[Metric]:
        window = GaugeMetricFamily(
            "kcw_llm_window",
            "Requests this worker may have in flight at the server.",
            labels=["server"],
        )
        in_flight = GaugeMetricFamily(
            "kcw_llm_in_flight",
            "Requests this worker has in flight at the server.",
            labels=["server"],
        )
        healthy = GaugeMetricFamily(
            "kcw_llm_healthy",
            "1 while the server answers, 0 while it is marked down.",
            labels=["server"],
        )
        for state in self.source() if self.source else ():
            window.add_metric([state.url], state.window)
            in_flight.add_metric([state.url], state.in_flight)
            healthy.add_metric([state.url], 1.0 if state.healthy else 0.0)
        yield from (window, in_flight, healthy)


_SERVERS = _Servers()
REGISTRY.register(_SERVERS)


def declare(kinds: Iterable[str], retry_errors: Iterable[str]) -> None:
    """Publish every known series at 0, so rates and sums have data before the first event."""
    errors = list(retry_errors)
    for kind in kinds:
        JOBS_SUCCEEDED.labels(kind)
        JOBS_REDELIVERED.labels(kind)
        JOBS_SKIPPED.labels(kind)
        for error in errors:
            JOBS_RETRIED.labels(kind, error)
    for outcome in ("succeeded", "failed", "skipped", "duplicate"):
        BATCH_LINES.labels(outcome)


def watch_servers(source: Callable[[], Iterable[ServerState]]) -> None:
    """Publish the per-server gauges from `source`, called at every scrape."""
    _SERVERS.source = source
