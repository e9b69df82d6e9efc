"""A server slower than LLM_TIMEOUT: timeouts are retried, and the job's time limit stops runaways.

The server is real; a proxy in front of it holds chat requests for a chosen time.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.ledger import chat
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.faults.slow_proxy import SlowProxy
from tests.support.processes import LLMServer

JOBS = 8


def test_requests_past_llm_timeout_are_retried_and_the_jobs_complete(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    # The first request of each job hangs for 30 s; LLM_TIMEOUT is 3 s.
    proxy = SlowProxy(llm_server.port, lambda n: 30.0 if n <= JOBS else 0.0).start()
    try:
        with scenario(tmp_path, proxy.url, LLM_TIMEOUT="3", WORKER_CONCURRENCY=str(JOBS)) as run:
            ledger = run.ledger
            run.start_worker("slow")
            for n in range(JOBS):
                ledger.submit("chat", chat(n, max_tokens=16))
            waited = ledger.wait(timeout=120)
            row = record(
                ledger.row(
                    "LLM server slower than LLM_TIMEOUT",
                    run.logs,
                    note=f"first {JOBS} requests held 30 s, LLM_TIMEOUT 3 s",
                    seconds=round(waited, 1),
                    requests_held=proxy.held,
                )
            )
            assert row.completed == JOBS and row.lost == 0 and row.duplicated == 0, row
            assert proxy.held > JOBS, "each job's first request timed out and was sent again"
            assert waited < 60, "a held request is abandoned after LLM_TIMEOUT, not after 30 s"
    finally:
        proxy.stop()


def test_a_job_that_never_gets_an_answer_stops_at_its_time_limit(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    # Every chat request hangs; without the time limit 20 attempts of 4 s would run.
    proxy = SlowProxy(llm_server.port, lambda n: 600.0).start()
    try:
        with scenario(
            tmp_path,
            proxy.url,
            LLM_TIMEOUT="4",
            LLM_RETRY_ATTEMPTS="20",
            TASK_TIME_LIMIT="12",  # the job stops at its soft limit, 10 s
            WORKER_CONCURRENCY="4",
        ) as run:
            ledger = run.ledger
            worker = run.start_worker("runaway")
            started = time.monotonic()
            for n in range(4):
                ledger.submit("chat", chat(n, max_tokens=16))
            ledger.wait(timeout=90)
            took = time.monotonic() - started
            row = record(
                ledger.row(
                    "LLM server never answers",
                    run.logs,
                    note="TASK_TIME_LIMIT 12 s; each job fails with JobTimedOut",
                    seconds=round(took, 1),
                )
            )
            assert row.failed_clearly == 4 and row.lost == 0, row
            assert set(ledger.errors()) == {"JobTimedOut"}
            assert all("TASK_TIME_LIMIT=12s" in message for message in ledger.messages())
            assert took < 30, f"the time limit should stop each job near 10 s, took {took:.0f} s"
            assert worker.alive(), worker.tail()
    finally:
        proxy.stop()
