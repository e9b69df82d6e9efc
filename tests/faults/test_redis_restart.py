"""Restart Redis while jobs are queued and in flight, and account for every job.

The worker is frozen (SIGSTOP) while a snapshot records which jobs are queued,
delivered-but-unacknowledged, and finished; then Redis stops, starts again, and the
worker thaws. So the loss is known exactly:

- AOF on (as in compose): nothing is lost, and every result stored before stays.
- AOF off and no snapshots: the queue and the stored results vanish with the data, so
  exactly the queued and the finished jobs are lost. The delivered ones are still held
  by the worker, which finishes them and stores their results in the empty Redis.
- kill -9 of Redis (a crash, not a restart) with `appendfsync everysec`, while the worker
  runs: every write Redis acknowledged was already handed to the kernel, so nothing is
  lost (a power cut, not tested here, can lose up to the last second).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.ledger import Snapshot, chat, queue_is_empty, snapshot
from tests.faults.report import Record
from tests.faults.scenario import Scenario, frozen, scenario
from tests.support.processes import LLMServer, Worker, stop, wait_until

JOBS = 60
DOWN_S = 5
VISIBILITY = 20


def _midway(run: Scenario) -> Worker:
    worker = run.start_worker("redis-fault")
    for n in range(JOBS):
        run.ledger.submit("chat", chat(n, max_tokens=48))
    wait_until(lambda: run.ledger.finished() >= 5, 180, "the first jobs")
    return worker


def _accounted(snap: Snapshot, ids: list[str]) -> None:
    """Every job is somewhere in the snapshot, and the snapshot caught each kind of job."""
    assert snap.queued | snap.unacked | snap.done == set(ids), "a job is nowhere in Redis"
    assert snap.queued and snap.unacked and snap.done, snap


def _still_serves(run: Scenario) -> None:
    after = run.new_ledger()
    after.submit("chat", chat(0, max_tokens=4))
    after.wait(60)
    assert not after.lost_ids(), "the worker should take new jobs after the fault"


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
        worker = _midway(run)
        with frozen(worker):
            snap = snapshot(ledger)
            stop(run.broker.proc, signal.SIGTERM)  # as `docker compose restart redis` does
            time.sleep(DOWN_S)
            run.restart_redis()
        _accounted(snap, ledger.ids)
        # Nothing comes back for jobs lost with AOF off: stop once none has finished for 20 s.
        waited = ledger.wait(timeout=240, idle=None if appendonly else 20)
        lost = ledger.lost_ids()
        row = record(
            ledger.row(
                f"Redis restart, AOF {'on' if appendonly else 'off'}",
                run.logs,
                note=(
                    f"down {DOWN_S} s with {len(snap.queued)} queued, "
                    f"{len(snap.unacked)} delivered, {len(snap.done)} finished"
                ),
                queued=len(snap.queued),
                delivered=len(snap.unacked),
                finished=len(snap.done),
                seconds=round(waited, 1),
            )
        )
        assert worker.alive(), f"the worker should reconnect by itself; {worker.tail()}"
        assert row.duplicated == 0, row
        if appendonly:
            assert lost == set(), row
            assert row.completed == JOBS, ledger.errors()
            wait_until(lambda: queue_is_empty(run.broker.client()), 30, "queue and unacked empty")
        else:
            # The queue and the results vanished with the data; this is what AOF prevents.
            assert lost == snap.queued | snap.done, (row, len(lost))
        _still_serves(run)


def test_redis_kill_9_with_appendfsync_everysec_loses_nothing(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    with scenario(
        tmp_path, llm_server.url, appendonly=True, REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY)
    ) as run:
        ledger = run.ledger
        worker = _midway(run)
        done_before = {
            i for i, meta in ledger.metas(fresh=True).items() if meta["status"] == "SUCCESS"
        }
        run.broker.proc.send_signal(signal.SIGKILL)  # the worker keeps running meanwhile
        run.broker.proc.wait(10)
        time.sleep(DOWN_S)
        run.restart_redis()
        waited = ledger.wait(timeout=240)
        row = record(
            ledger.row(
                "Redis kill -9, AOF everysec",
                run.logs,
                note=f"crash mid-run with {len(done_before)} finished, down {DOWN_S} s",
                finished=len(done_before),
                seconds=round(waited, 1),
            )
        )
        assert worker.alive(), f"the worker should reconnect by itself; {worker.tail()}"
        assert ledger.lost_ids() == set(), row
        assert row.duplicated == 0 and row.completed == JOBS, row
        kept = {i for i, meta in ledger.metas(fresh=True).items() if meta["status"] == "SUCCESS"}
        assert done_before <= kept, "a result stored before the crash is gone"
        wait_until(lambda: queue_is_empty(run.broker.client()), 60, "queue and unacked empty")
        _still_serves(run)
