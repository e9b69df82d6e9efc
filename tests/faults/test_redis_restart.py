"""Restart Redis while jobs are queued and in flight, with AOF on (as in compose) and off.

With AOF on, the worker reconnects by itself and every job completes. With AOF off
(and no snapshots), the restart empties Redis: queued jobs are gone, which is why the
compose file turns AOF on.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.ledger import Ledger, chat, queue_is_empty
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer, stop, wait_until

JOBS = 60
DOWN_S = 5
VISIBILITY = 20


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof-on", "aof-off"])
def test_redis_restart_mid_run(
    tmp_path: Path, llm_server: LLMServer, record: Record, appendonly: bool
) -> None:
    with scenario(
        tmp_path,
        llm_server.url,
        appendonly=appendonly,
        REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY),
    ) as run:
        ledger = run.ledger
        worker = run.start_worker("redis-restart")
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=48))
        wait_until(lambda: ledger.finished() >= 5, 60, "the first jobs")
        queued = run.broker.client().llen("kcw")
        in_flight = run.broker.client().hlen("unacked")
        stop(run.broker.proc, signal.SIGTERM)  # as `docker compose restart redis` does
        time.sleep(DOWN_S)
        run.restart_redis()
        # Nothing comes back for jobs lost with AOF off: stop once none has finished for 20 s.
        waited = ledger.wait(timeout=240, idle=None if appendonly else 20)
        row = record(
            ledger.row(
                f"Redis restart, AOF {'on' if appendonly else 'off'}",
                run.logs,
                note=f"down {DOWN_S} s with {queued} queued, {in_flight} in flight",
                seconds=round(waited, 1),
            )
        )
        assert worker.alive(), "the worker reconnects by itself"
        assert row.duplicated == 0, row
        if appendonly:
            assert row.lost == 0, row
            assert row.completed == JOBS, ledger.errors()
            wait_until(lambda: queue_is_empty(run.broker.client()), 30, "queue and unacked empty")
        else:
            # Queued jobs and finished results vanished with the data; this is what AOF prevents.
            assert row.lost >= queued > 0, row
        # Either way the worker still takes new jobs.
        after = Ledger(run.app, run.broker.client())
        after.submit("chat", chat(0, max_tokens=4))
        after.wait(60)
        assert after.row("after", run.logs).completed == 1
