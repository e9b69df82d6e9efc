"""The LLM server goes away mid-run: for 30 s (jobs wait and complete), or for good.

Retries use the default budget in the first case: job retries back off 5, 10, 20,
40, 80 s with equal jitter (at least half of each), so a job outlasts any outage
shorter than about 77 s. In the second case the budget is cut to seconds, and every
job must end as failed with LLMServerDown, an LLMUnavailable, and nothing left queued.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.faults.ledger import chat, queue_is_empty
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.support.processes import start_launcher, stop, wait_until

JOBS = 40
DOWN_S = 30


def test_server_down_30_s_then_back_every_job_completes(tmp_path: Path, record: Record) -> None:
    server = start_launcher(tmp_path)
    try:
        # The defaults of .env.sample, not the integration tier's short waits.
        with scenario(
            tmp_path, server.url, LLM_RETRY_MAX_WAIT="30", TASK_RETRY_BACKOFF_MAX="300"
        ) as run:
            ledger = run.ledger
            worker = run.start_worker("llm-down")
            for n in range(JOBS):
                ledger.submit("chat", chat(n, max_tokens=48))
            wait_until(lambda: ledger.finished() >= 5, 180, "the first jobs")
            stop(server.proc, signal.SIGKILL)
            left = JOBS - ledger.finished()
            time.sleep(DOWN_S)
            server = start_launcher(tmp_path, port=server.port)
            waited = ledger.wait(timeout=200)
            row = record(
                ledger.row(
                    "LLM server down 30 s",
                    run.logs,
                    note=f"kill -9 with {left} jobs unfinished, same port after {DOWN_S} s",
                    seconds=round(waited, 1),
                )
            )
            assert row.lost == 0 and row.duplicated == 0, row
            assert row.completed == JOBS, ledger.errors()
            assert "Retry in" in worker.output(), "jobs should have waited out the outage"
            assert queue_is_empty(run.broker.client())
    finally:
        server.stop()


def test_server_down_past_the_retry_budget_every_job_fails_clearly(
    tmp_path: Path, record: Record
) -> None:
    server = start_launcher(tmp_path)
    try:
        with scenario(
            tmp_path,
            server.url,
            LLM_RETRY_ATTEMPTS="2",
            LLM_RETRY_MAX_WAIT="0.5",
            TASK_MAX_RETRIES="2",
            TASK_RETRY_BACKOFF_MAX="2",
        ) as run:
            ledger = run.ledger
            run.start_worker("llm-gone")
            for n in range(JOBS):
                ledger.submit("chat", chat(n, max_tokens=48))
            wait_until(lambda: ledger.finished() >= 3, 180, "the first jobs")
            stop(server.proc, signal.SIGKILL)  # and it never comes back
            waited = ledger.wait(timeout=120)
            row = record(
                ledger.row(
                    "LLM server gone for good",
                    run.logs,
                    note="retry budget cut to seconds; each job fails with LLMServerDown",
                    seconds=round(waited, 1),
                )
            )
            assert row.lost == 0 and row.duplicated == 0, row
            assert row.completed + row.failed_clearly == JOBS, row
            assert row.failed_clearly > 0
            assert set(ledger.errors()) == {"LLMServerDown"}
            assert all("LLM_SERVER_URL" in message for message in ledger.messages())
            # Nothing is stuck in limbo: no job waits in the queue or unacknowledged.
            wait_until(lambda: queue_is_empty(run.broker.client()), 20, "queue and unacked empty")
    finally:
        server.stop()
