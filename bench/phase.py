"""What one phase measured, and the figures derived from it.

Every phase records each job's send and finish time and its generated tokens, the server's
token counter through the phase, and the CPU seconds the queue's processes used. Rates come
from the steady state (leaving out at least 10% of the phase's jobs or tokens at each end,
in whole waves of its concurrency), not from its wall time. A phase run in parts, taking
turns with the phases it is compared with, adds up the steady spans of its parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import percentile, steady_edges, steady_span

__all__ = ["Completion", "PhaseResult", "served_at_once"]

JSON = dict[str, Any]
# Below this many jobs a phase has no steady state to speak of (smoke runs); its rate is
# then taken over the whole phase.
STEADY_MIN_JOBS = 20


def served_at_once(concurrency: int, server_width: int | None) -> int:
    """Requests the server runs together at `concurrency` in flight: no more than its
    parallel requests (llama-server's slots) when those are known."""
    return min(concurrency, server_width) if server_width else concurrency


def pooled_rate(spans: list[tuple[float, float]]) -> float:
    """The rate over several (count, seconds) spans: their counts over their seconds."""
    return sum(count for count, _ in spans) / sum(seconds for _, seconds in spans)


@dataclass(frozen=True)
class Completion:
    """One job: when it was sent, when its result was there, tokens it generated."""

    sent: float
    done: float
    tokens: int
    ok: bool = True


@dataclass
class PhaseResult:
    """One measured phase of one repeat."""

    setup: str
    workload: str
    repeat: int
    concurrency: int
    started: float
    completions: list[Completion]
    counter: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    extra: JSON = field(default_factory=dict)
    # Requests the server runs at once, when fewer than `concurrency` (llama-server's
    # slots): the width of the waves its jobs finish in.
    server_width: int | None = None
    # The parts it was run in, when more than one (see `merged`).
    parts: list[PhaseResult] = field(default_factory=list)

    @classmethod
    def merged(cls, parts: list[PhaseResult]) -> PhaseResult:
        """One setup's phase run in `parts` apart from each other: their jobs and CPU
        together, rates over the sum of their steady spans."""
        if not parts:
            raise ValueError("a merged phase needs at least one part")
        first = parts[0]
        cpu: dict[str, float] = {}
        extra: JSON = {}
        for part in parts:
            for name, seconds in part.cpu_s.items():
                cpu[name] = cpu.get(name, 0.0) + seconds
            extra.update(part.extra)
        return cls(
            first.setup,
            first.workload,
            first.repeat,
            first.concurrency,
            first.started,
            [c for part in parts for c in part.completions],
            cpu_s=cpu,
            extra=extra,
            server_width=first.server_width,
            parts=list(parts),
        )

    @property
    def jobs(self) -> int:
        return len(self.completions)

    @property
    def failures(self) -> int:
        return sum(not c.ok for c in self.completions)

    def cumulative(self, weight: str) -> list[tuple[float, float]]:
        """(time, jobs or tokens done so far) at the phase's start and at each finish."""
        points, total = [(self.started, 0.0)], 0.0
        for c in sorted(self.completions, key=lambda c: c.done):
            total += c.tokens if weight == "tokens" else 1
            points.append((c.done, total))
        return points

    def _span(self, weight: str) -> tuple[float, float]:
        """(jobs or tokens, seconds) of this phase's steady state."""
        points = self.cumulative(weight)
        if self.jobs < STEADY_MIN_JOBS or points[-1][1] <= 0:  # no window: the whole phase
            return points[-1][1], max(1e-9, points[-1][0] - self.started)
        return steady_span(points, *self._edges())

    def _rate(self, weight: str) -> float:
        spans = [part._span(weight) for part in self.parts or [self]]
        return pooled_rate(spans)

    def _edges(self) -> tuple[float, float]:
        return steady_edges(self.jobs, served_at_once(self.concurrency, self.server_width))

    @property
    def jobs_per_s(self) -> float:
        """Jobs per second in the steady state, from the jobs' finish times."""
        return self._rate("jobs")

    @property
    def tok_per_s(self) -> float:
        """Generated tokens per second in the steady state, from the jobs' `usage`."""
        return self._rate("tokens")

    @property
    def server_tok_per_s(self) -> float | None:
        """The same from the server's own counter; None when it publishes none."""
        spans = []
        for part in self.parts or [self]:
            counter = part.counter
            if len(counter) < 3 or counter[-1][1] <= counter[0][1]:
                return None
            spans.append(steady_span(counter, *part._edges()))
        return pooled_rate(spans)

    @property
    def wall_s(self) -> float:
        """Seconds from the start to the last job's result (of every part, added up)."""
        if self.parts:
            return sum(part.wall_s for part in self.parts)
        return max(c.done for c in self.completions) - self.started

    @property
    def latencies(self) -> list[float]:
        return [c.done - c.sent for c in self.completions]

    def cpu_per_job_ms(self) -> dict[str, float]:
        return {name: 1000 * s / max(1, self.jobs) for name, s in self.cpu_s.items()}

    def summary(self) -> JSON:
        """The figures a report needs, rounded; the raw samples stay out."""
        server = self.server_tok_per_s
        return {
            "setup": self.setup,
            "workload": self.workload,
            "repeat": self.repeat,
            "concurrency": self.concurrency,
            "jobs": self.jobs,
            "failures": self.failures,
            "tokens": sum(c.tokens for c in self.completions),
            "wall_s": round(self.wall_s, 3),
            "parts": len(self.parts) or 1,
            **(
                {"part_tok_per_s": [round(part.tok_per_s, 2) for part in self.parts]}
                if self.parts
                else {}
            ),
            "jobs_per_s": round(self.jobs_per_s, 3),
            "tok_per_s": round(self.tok_per_s, 2),
            "server_tok_per_s": round(server, 2) if server is not None else None,
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 1),
            "p95_ms": round(percentile(self.latencies, 95) * 1000, 1),
            "cpu_ms_per_job": {k: round(v, 3) for k, v in self.cpu_per_job_ms().items()},
            **self.extra,
        }
