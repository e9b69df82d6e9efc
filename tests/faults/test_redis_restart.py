"""Restart Redis while jobs are queued and in flight, with AOF on (as in compose) and off.

With AOF on, the worker reconnects by itself and every job completes. With AOF off
(and no snapshots), the restart empties Redis: queued jobs are gone, which is why the
compose file turns AOF on.
"""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

import pytest

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

JOBS = 60
DOWN_S = 5
VISIBILITY = 20


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof-on", "aof-off"])
def test_redis_restart_mid_run(
    tmp_path: Path, llm_server: LLMServer, record: Record, appendonly: bool
) -> None:
    password = secrets.token_urlsafe(16)
    broker = start_redis(tmp_path, password, appendonly=appendonly)
    env = worker_env(broker, llm_server.url, REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY))
    env.pop("WORKER_CONCURRENCY")
    app = client_app(broker)
    ledger = Ledger(app, broker.client())
    worker = start_worker(tmp_path, env, "redis-restart")
    try:
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=48))
        wait_until(lambda: ledger.finished() >= 5, 60, "the first jobs")
        queued = broker.client().llen("kcw")
        in_flight = broker.client().hlen("unacked")
        stop(broker.proc, signal.SIGTERM)  # as `docker compose restart redis` does
        time.sleep(DOWN_S)
        broker = start_redis(tmp_path, password, port=broker.port, appendonly=appendonly)
        ledger.redis_client = broker.client()
        # Nothing comes back for jobs lost with AOF off: stop once none has finished for 20 s.
        waited = ledger.wait(timeout=240, idle=None if appendonly else 20)
        row = ledger.row(
            f"Redis restart, AOF {'on' if appendonly else 'off'}",
            [worker.log],
            note=f"down {DOWN_S} s with {queued} queued, {in_flight} in flight",
            seconds=round(waited, 1),
        )
        record(row)
        assert worker.alive(), "the worker reconnects by itself"
        assert row.duplicated == 0, row
        if appendonly:
            assert row.lost == 0, row
            assert row.completed == JOBS, ledger.errors()
            wait_until(lambda: queue_is_empty(broker.client()), 30, "queue and unacked empty")
        else:
            # Queued jobs and finished results vanished with the data; this is what AOF prevents.
            assert row.lost >= queued > 0, row
        # Either way the worker still takes new jobs.
        after = Ledger(app, broker.client())
        after.submit("chat", chat(0, max_tokens=4))
        after.wait(60)
        assert after.row("after", [worker.log]).completed == 1
    finally:
        stop(worker.proc)
        app.close()
        stop(broker.proc)
