"""The LLM server's own count of generated tokens, sampled through a phase.

llama-server publishes `llamacpp:tokens_predicted_total` (with `--metrics`), vLLM
`vllm:generation_tokens_total`; the bench reads whichever the server has, a few times a
second, so a phase's steady-state rate comes from the server rather than from our client.
"""

from __future__ import annotations

import re
import threading
import time
from types import TracebackType

import httpx

__all__ = ["COUNTERS", "CounterSampler", "read_counter"]

COUNTERS = ("llamacpp:tokens_predicted_total", "vllm:generation_tokens_total")
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfaN]+)")


def parse_counter(text: str, names: tuple[str, ...] = COUNTERS) -> float | None:
    """The sum over labels of the first of `names` found in a Prometheus text page."""
    for name in names:
        values = [
            float(match.group(3))
            for match in map(_LINE.match, text.splitlines())
            if match and match.group(1) == name
        ]
        if values:
            return sum(values)
    return None


def read_counter(url: str, client: httpx.Client | None = None) -> float | None:
    """Generated tokens so far, from `url/metrics`; None when the server publishes none."""
    try:
        response = (client or httpx).get(f"{url}/metrics", timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_counter(response.text)


class CounterSampler:
    """Samples the generated-token counter every `interval` seconds while in a `with`."""

    def __init__(self, url: str, interval: float = 0.25) -> None:
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-counter", daemon=True)
        self._client = httpx.Client(timeout=5)

    def _sample(self) -> None:
        value = read_counter(self.url, self._client)
        if value is not None:
            self.samples.append((time.time(), value))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CounterSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        self._client.close()

    @property
    def total(self) -> float:
        """Tokens counted between the first and the last sample."""
        return self.samples[-1][1] - self.samples[0][1] if len(self.samples) > 1 else 0.0
