"""Percentiles, a bootstrap interval for a median, and the steady-state rate of a phase.

Ratios are compared across repeats of one run, so each figure comes with its spread: the
median over repeats and a percentile-bootstrap 95% interval, called "indistinguishable"
from 1 when the interval contains it.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "interval", "percentile", "steady_edges", "steady_rate", "steady_span"]

BOOTSTRAP_SAMPLES = 4000


def percentile(values: Sequence[float], pct: float) -> float:
    """Percentile with linear interpolation between ranks; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Interval:
    """The median of some values and a bootstrap 95% interval around it."""

    median: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def verdict(self, against: float = 1.0) -> str:
        """'indistinguishable' when the interval holds `against`, else above or below it."""
        if self.contains(against):
            return "indistinguishable"
        return "above" if self.low > against else "below"

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "median": round(self.median, 4),
            "low": round(self.low, 4),
            "high": round(self.high, 4),
            "n": self.n,
            "vs_1": self.verdict(),
        }


def interval(values: Sequence[float], seed: int = 0) -> Interval:
    """Median of `values` with a percentile-bootstrap 95% interval (resampling the values)."""
    if not values:
        raise ValueError("no values to summarize")
    rng = random.Random(seed)
    data = list(values)
    medians = sorted(
        statistics.median(rng.choices(data, k=len(data))) for _ in range(BOOTSTRAP_SAMPLES)
    )
    return Interval(
        statistics.median(data),
        percentile(medians, 2.5),
        percentile(medians, 97.5),
        len(data),
    )


def steady_edges(jobs: int, concurrency: int, least: float = 0.1) -> tuple[float, float]:
    """The share of a phase's count left out at each end: at least `least`, rounded up to
    whole waves of `concurrency` jobs.

    A server that runs its requests in lockstep (vLLM on a CPU: 64 prefilled together,
    then decoded together; llama-server's slots filled at once) finishes them in waves.
    Edges at whole waves from the start fall at the same point of a wave at both ends;
    edges at a fixed share, or the same count from each end of a phase that is not a whole
    number of waves, can fall after a whole wave at one end and early in one at the other
    (a 512-line batch on 64: 10% and 90% are 0.8 and 7.2 waves), which takes a part-wave's
    tokens over a whole wave's time. The high edge is then below `1 - least`.
    """
    if concurrency <= 0 or jobs <= 0:
        return least, 1 - least
    waves = -(-least * jobs // concurrency)  # ceil
    first = waves * concurrency
    if first / jobs > 0.25:  # under four waves: whole ones would leave too little between
        return least, 1 - least
    # Whole waves between the edges as well, counted from the first one, so that both fall
    # at a wave's end: 50 jobs in waves of 8 end their window at 40, not at 42, which is two
    # jobs into the sixth wave and would take 34 jobs over the time of 40.
    last = first + (jobs - 2 * first) // concurrency * concurrency
    return first / jobs, last / jobs


def _first_at(samples: Sequence[tuple[float, float]], level: float) -> tuple[float, float]:
    """The first sample (time, count) whose count reached `level`."""
    reach = level - 1e-9 * max(1.0, abs(level))  # a share times a total is not exact
    for t, v in samples:
        if v >= reach:
            return t, v
    raise ValueError(f"the count never reached {level}")


def steady_rate(
    samples: Sequence[tuple[float, float]], low: float = 0.1, high: float = 0.9
) -> float:
    """Rate over the middle of a phase, which leaves out ramp-up and drain: the count added
    between the samples where it first passed `low` and `high` of its total, per second."""
    count, seconds = steady_span(samples, low, high)
    return count / seconds


def steady_span(
    samples: Sequence[tuple[float, float]], low: float = 0.1, high: float = 0.9
) -> tuple[float, float]:
    """The count added, and the seconds taken, between the samples where the count first
    passed `low` and `high` of its total (a phase run in parts adds up its parts' spans).

    Measured between real samples, not interpolated levels, so counts that rise in steps
    (64 requests finishing together) are neither over- nor under-counted. `samples` are
    (time, cumulative count) pairs in time order, starting at the phase's start.
    """
    if len(samples) < 2:
        raise ValueError("a rate needs at least two samples")
    base = samples[0][1]
    rising: list[tuple[float, float]] = []
    for t, v in samples:
        # Counts taken at one instant (jobs seen by the same poll) are one sample: its
        # last value, so an edge never falls inside a step.
        if rising and rising[-1][0] == t:
            rising[-1] = (t, v - base)
        else:
            rising.append((t, v - base))
    total = rising[-1][1]
    if total <= 0:
        raise ValueError("nothing was counted during the phase")
    (t_low, v_low), (t_high, v_high) = (
        _first_at(rising, total * low),
        _first_at(rising, total * high),
    )
    if t_high <= t_low:
        raise ValueError("the phase is too short for a steady-state window")
    return v_high - v_low, t_high - t_low
