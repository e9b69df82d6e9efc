"""A TCP proxy in front of an LLM server that counts, per job, the requests it forwards.

The worker names the job and the run of it in every LLM request (`worker.tracing`:
`X-Request-Id`, `X-Kcw-Execution`). This proxy reads those headers, so the fault report
can say how many LLM requests each job made and in how many separate runs: a job run
again after a crash shows two executions even if it stored only one result.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass

from tests.faults.tcp_proxy import OnChunk, TcpProxy
from worker.tracing import EXECUTION_HEADER, REQUEST_ID_HEADER


@dataclass(frozen=True)
class Calls:
    """What one job sent to the LLM server."""

    requests: int
    executions: int


def job_headers(chunk: bytes) -> tuple[str, str] | None:
    """(job id, execution id) from the head of an HTTP POST, if it names a job."""
    if not chunk.startswith(b"POST "):
        return None
    head = chunk.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    fields = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    job = fields.get(REQUEST_ID_HEADER.lower())
    return None if job is None else (job, fields.get(EXECUTION_HEADER.lower(), ""))


class CountingProxy(TcpProxy):
    """Forwards everything as it is; counts each job's requests and distinct executions."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self._requests: Counter[str] = Counter()
        self._executions: defaultdict[str, set[str]] = defaultdict(set)
        self._lock = threading.Lock()

    def calls(self) -> dict[str, Calls]:
        """Every job seen so far, by id."""
        with self._lock:
            return {
                job: Calls(count, len(self._executions[job]))
                for job, count in self._requests.items()
            }

    def hooks(self) -> tuple[OnChunk | None, OnChunk | None]:
        return self._count, None

    async def _count(self, chunk: bytes) -> bool:
        named = job_headers(chunk)
        if named is not None:
            job, execution = named
            with self._lock:
                self._requests[job] += 1
                self._executions[job].add(execution)
        return True
