"""`kcw demo`: one real job of each kind through Redis, a worker and the LLM server."""

from __future__ import annotations

import time
from typing import Any, TextIO

from worker.cli import exit_codes
from worker.cli.output import wait_visibly
from worker.client import JobClient
from worker.jobs import registry
from worker.jobs.kind import JobKind

__all__ = ["demo_jobs", "run_demo"]


def demo_jobs() -> list[tuple[JobKind[Any], dict[str, Any]]]:
    """The sample jobs: one of each kind that has a demo the default model can serve."""
    return [(kind, kind.demo.payload()) for kind in registry.kinds() if kind.demo is not None]


def run_demo(client: JobClient, timeout: float, out: TextIO, err: TextIO) -> int:
    """Submit every sample job at once, then wait for each and print what it gave."""
    started = time.monotonic()
    jobs = [(kind, payload, client.submit(kind.name, payload)) for kind, payload in demo_jobs()]
    out.write(f"submitted {len(jobs)} jobs; a worker runs them against the LLM server\n")
    failures = 0
    for kind, payload, job in jobs:
        assert kind.demo is not None
        out.write(f"\n== {kind.name}: {kind.demo.brief(payload)}\n")
        out.flush()
        wait_visibly(job, timeout, err)
        if job.status() == "SUCCESS":
            value = job.result()
            tokens = value["usage"]["total_tokens"]
            out.write(f"-> {kind.demo.highlight(value)}\n")
            out.write(
                f"   job {job.id}: {tokens} tokens, done at {time.monotonic() - started:.1f}s\n"
            )
        else:
            failures += 1
            error = job.error()
            out.write(f"-> FAILED: {type(error).__name__}: {error}\n")
    out.write(
        f"\n{len(jobs) - failures}/{len(jobs)} demo jobs succeeded; "
        "`kcw result <job id>` shows any of them in full\n"
    )
    return exit_codes.FAILED if failures else exit_codes.OK
