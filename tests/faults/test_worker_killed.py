"""kill -9 the worker three times while 120 jobs run: every job ends with exactly one result.

The visibility timeout is 15 s here so that a killed worker's jobs come back
quickly; production derives it from TASK_TIME_LIMIT (see REDIS_VISIBILITY_TIMEOUT).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.faults.ledger import chat, queue_is_empty
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer, wait_until

JOBS = 120
KILLS = 3
VISIBILITY = 15


def test_kill_9_the_worker_three_times_loses_and_duplicates_nothing(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    with scenario(tmp_path, llm_server.url, REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY)) as run:
        ledger = run.ledger
        run.start_worker("run0")
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=48))
        for kill in range(1, KILLS + 1):
            # Let it get well into the work, then kill it while jobs are in flight.
            before = ledger.finished()
            wait_until(lambda b=before: ledger.finished() >= b + 8, 180, "jobs finishing")
            run.workers[-1].proc.send_signal(signal.SIGKILL)
            run.workers[-1].proc.wait(10)
            assert run.broker.client().hlen("unacked") > 0, "the kill should catch jobs in flight"
            time.sleep(1)
            run.start_worker(f"run{kill}")
        waited = ledger.wait(timeout=240, idle=60)
        row = record(
            ledger.row(
                "worker kill -9 x3",
                run.logs,
                note=f"visibility timeout {VISIBILITY} s",
                seconds=round(waited, 1),
            )
        )
        assert row.duplicated == 0, row
        # The atomic fetch leaves no window in which a kill loses a job (test_fetch_window.py
        # aims at it): every job ends with exactly one result.
        assert row.lost == 0, row
        assert row.completed == JOBS, ledger.errors()
        assert row.extra["redelivered"] > 0, "some jobs should have run again"
        wait_until(lambda: queue_is_empty(run.broker.client()), 20, "queue and unacked empty")


def test_a_job_delivered_again_after_its_result_was_stored_is_not_run_twice(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    """The window a kill -9 rarely hits: result stored, message not yet acknowledged."""
    with scenario(tmp_path, llm_server.url) as run:
        worker = run.start_worker("redelivery")
        client, ledger = run.broker.client(), run.ledger
        job_id = ledger.submit("chat", chat(1, max_tokens=8))
        ledger.wait(60)
        first = ledger.metas(fresh=True)[job_id]
        assert first["status"] == "SUCCESS"
        # The same message again, as kombu restores an unacknowledged one: redelivered.
        run.app.send_task("kcw.chat", args=[chat(1, max_tokens=8)], task_id=job_id, queue="parked")
        message = json.loads(client.rpop("parked") or b"{}")
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
        client.lpush("kcw", json.dumps(message))
        wait_until(lambda: "already has a result" in worker.output(), 30, "the redelivery")
        assert ledger.metas(fresh=True)[job_id] == first
        assert worker.output().count(f"[{job_id}] succeeded in") == 1
        # A new message under the same id that is not a redelivery runs as usual.
        run.app.send_task("kcw.chat", args=[chat(2, max_tokens=8)], task_id=job_id)
        wait_until(lambda: worker.output().count(f"[{job_id}] succeeded in") == 2, 60, "rerun")
