"""kill -9 the worker three times while 120 jobs run: every job ends with exactly one result.

The visibility timeout is 15 s here so that a killed worker's jobs come back
quickly; production derives it from TASK_TIME_LIMIT (see REDIS_VISIBILITY_TIMEOUT).
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from pathlib import Path

from tests.faults.ledger import Ledger, chat, queue_is_empty
from tests.faults.report import Record
from tests.integration.processes import (
    LLMServer,
    client_app,
    start_redis,
    start_worker,
    stop,
    wait_until,
    worker_env,
)

JOBS = 120
KILLS = 3
VISIBILITY = 15


def test_kill_9_the_worker_three_times_loses_and_duplicates_nothing(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    broker = start_redis(tmp_path, secrets.token_urlsafe(16))
    env = worker_env(broker, llm_server.url, REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY))
    env.pop("WORKER_CONCURRENCY")  # sized to the server, as in production
    app = client_app(broker)
    ledger = Ledger(app, broker.client())
    workers = [start_worker(tmp_path, env, "run0")]
    try:
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=48))
        for kill in range(1, KILLS + 1):
            # Let it get well into the work, then kill it while jobs are in flight.
            before = ledger.finished()
            wait_until(lambda b=before: ledger.finished() >= b + 8, 60, "jobs finishing")
            workers[-1].proc.send_signal(signal.SIGKILL)
            workers[-1].proc.wait(10)
            in_flight = broker.client().hlen("unacked")
            assert in_flight > 0, "the kill should catch jobs in flight"
            time.sleep(1)
            workers.append(start_worker(tmp_path, env, f"run{kill}"))
        waited = ledger.wait(timeout=240)
        row = ledger.row(
            "worker kill -9 x3",
            [w.log for w in workers],
            note=f"visibility timeout {VISIBILITY} s",
            seconds=round(waited, 1),
        )
        record(row)
        assert row.lost == 0, row
        assert row.duplicated == 0, row
        assert row.completed == JOBS, ledger.errors()
        assert row.extra["redelivered"] > 0, "some jobs should have run again"
        wait_until(lambda: queue_is_empty(broker.client()), 20, "queue and unacked empty")
    finally:
        for w in workers:
            stop(w.proc)
        app.close()
        stop(broker.proc)


def test_a_job_delivered_again_after_its_result_was_stored_is_not_run_twice(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    """The window a kill -9 rarely hits: result stored, message not yet acknowledged."""
    broker = start_redis(tmp_path, secrets.token_urlsafe(16))
    app = client_app(broker)
    worker = start_worker(tmp_path, worker_env(broker, llm_server.url), "redelivery")
    client = broker.client()
    try:
        ledger = Ledger(app, client)
        job_id = ledger.submit("chat", chat(1, max_tokens=8))
        ledger.wait(60)
        first = ledger.metas()[job_id]
        assert first["status"] == "SUCCESS"
        # The same message again, as kombu restores an unacknowledged one: redelivered.
        app.send_task("kcw.chat", args=[chat(1, max_tokens=8)], task_id=job_id, queue="parked")
        message = json.loads(client.rpop("parked") or b"{}")
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
        client.lpush("kcw", json.dumps(message))
        wait_until(lambda: "already has a result" in worker.output(), 30, "the redelivery")
        assert ledger.metas()[job_id] == first
        assert worker.output().count(f"[{job_id}] succeeded in") == 1
        # A new message under the same id that is not a redelivery runs as usual.
        app.send_task("kcw.chat", args=[chat(2, max_tokens=8)], task_id=job_id)
        wait_until(lambda: worker.output().count(f"[{job_id}] succeeded in") == 2, 60, "rerun")
    finally:
        stop(worker.proc)
        app.close()
        stop(broker.proc)
