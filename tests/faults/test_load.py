"""5,000 short jobs through one worker: all complete, memory stays flat, results expire.

Each job is a real one-token chat completion on llama-server, with the same prompt so
that the server's prompt cache keeps the load on the worker and Redis. The worker's RSS is
read after a warm-up and at the end; Redis memory, the queue and the results' TTLs
are read at the end.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.ledger import queue_is_empty
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer

JOBS = 5000
WARMUP = 200
# Longer than the run can take (a slow machine runs it at a tenth of the usual rate), so an
# expired result is never counted as a lost job; the TTLs are still checked against it.
RESULT_EXPIRES = 3600
SHORT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.timeout(1200)
def test_5000_short_jobs_through_one_worker(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    with scenario(tmp_path, llm_server.url, RESULT_EXPIRES=str(RESULT_EXPIRES)) as run:
        client = run.broker.client()
        worker = run.start_worker("load")
        warm = run.new_ledger()
        for _ in range(WARMUP):
            warm.submit("chat", SHORT)
        warm.wait(timeout=120)
        assert warm.finished() == WARMUP
        rss_start = rss_mib(worker.proc.pid)
        redis_start = int(client.info("memory")["used_memory"])

        ledger = run.ledger
        started = time.monotonic()
        for _ in range(JOBS):
            ledger.submit("chat", SHORT)
        submitted_in = time.monotonic() - started
        waited = ledger.wait(timeout=900)
        took = time.monotonic() - started
        rss_end = rss_mib(worker.proc.pid)
        redis_end = int(client.info("memory")["used_memory"])
        ttls = [client.ttl(f"celery-task-meta-{job_id}") for job_id in ledger.ids[::250]]
        row = record(
            ledger.row(
                "load: 5,000 short jobs, one worker",
                run.logs,
                note=f"{JOBS / took:.0f} jobs/s",
                worker_rss_start_mib=round(rss_start, 1),
                worker_rss_end_mib=round(rss_end, 1),
                redis_used_start_mib=round(redis_start / 2**20, 1),
                redis_used_end_mib=round(redis_end / 2**20, 1),
                redis_bytes_per_job=round((redis_end - redis_start) / JOBS),
                submit_seconds=round(submitted_in, 1),
                seconds=round(waited, 1),
            )
        )
        assert row.completed == JOBS and row.lost == 0 and row.duplicated == 0, row
        assert queue_is_empty(client)
        # Flat: no more than 64 MiB of growth over 5,000 jobs (about 13 KiB a job).
        assert rss_end - rss_start < 64, (rss_start, rss_end)
        # Bounded: what stays in Redis is the results, and each expires as configured.
        assert (redis_end - redis_start) / JOBS < 4096, (redis_start, redis_end)
        assert all(0 < ttl <= RESULT_EXPIRES for ttl in ttls), ttls
