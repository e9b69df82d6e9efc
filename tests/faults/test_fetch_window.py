"""kill -9 aimed at the fetch: 30 kills, each the moment Redis hands a worker a message.

Each worker talks to Redis through a `FetchKiller`, which kills it when the reply to its
n-th fetch carries a message (n drawn from 1 to 5, so the worker also has jobs in flight),
before the worker reads that reply. Stock kombu (REDIS_FETCH=brpop) loses such a message:
it has left the queue and was never recorded as unacknowledged. The atomic fetch
(REDIS_FETCH=atomic, the default) records it in the same step, so the visibility timeout
brings it back. Both run in the same test, stock first, so the window is shown to be real.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.faults.fetch_killer import FetchKiller
from tests.faults.ledger import chat, queue_is_empty
from tests.faults.report import Record, Row
from tests.faults.scenario import Scenario, scenario
from tests.support.processes import LLMServer, Worker, wait_until
from worker.ops.processes import spawn
from worker.ops.workers import worker_argv

JOBS = 300
KILLS = 30
# Longer than any job here takes, so only the killed workers' jobs are handed out again.
VISIBILITY = 30
SEED = 20261130


def _killed_workers(run: Scenario, proxy: FetchKiller, draws: random.Random) -> int:
    """Start a worker through the proxy, KILLS times; each dies at a fetch. Returns the kills."""
    env = {**run.env, "REDIS_PORT": str(proxy.port)}
    for kill in range(KILLS):
        name = f"aimed{kill}"
        log = run.tmp / f"worker-{name}.log"
        proc = spawn(worker_argv(hostname=f"{name}@%h", quiet=True), log, env, cwd=run.tmp)
        run.workers.append(Worker(proc, log, env))
        proxy.arm(proc, at=draws.randint(1, 5))
        proc.wait(90)
    return proxy.kills


def _aimed(tmp: Path, llm_url: str, fetch: str) -> tuple[Row, int]:
    draws = random.Random(SEED)
    tmp.mkdir()
    with scenario(
        tmp,
        llm_url,
        REDIS_FETCH=fetch,
        REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY),
        WORKER_CONCURRENCY="4",
    ) as run:
        ledger = run.ledger
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=4))
        proxy = FetchKiller(run.broker.port).start()
        try:
            kills = _killed_workers(run, proxy, draws)
        finally:
            proxy.stop()
        run.start_worker(f"{fetch}-survivor")  # straight to Redis: finishes the rest
        waited = ledger.wait(timeout=400, idle=VISIBILITY * 2)
        row = ledger.row(
            f"kill -9 at the fetch x{kills}, {fetch}",
            run.logs,
            note=f"REDIS_FETCH={fetch}; visibility timeout {VISIBILITY} s",
            kills=kills,
            seconds=round(waited, 1),
        )
        if fetch == "atomic":
            wait_until(lambda: queue_is_empty(run.broker.client()), 30, "queue and unacked empty")
        return row, kills


@pytest.mark.timeout(1200)
def test_kill_9_at_the_fetch_loses_with_stock_kombu_and_not_with_the_atomic_fetch(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    stock, stock_kills = _aimed(tmp_path / "brpop", llm_server.url, "brpop")
    record(stock)
    ours, our_kills = _aimed(tmp_path / "atomic", llm_server.url, "atomic")
    record(ours)

    assert stock_kills == our_kills == KILLS
    # The aim is true: stock kombu loses the message in flight at a kill (a message that came
    # back from a killed worker's unacked set can be lost at a later kill: "received" before).
    assert 0 < stock.lost <= KILLS, stock
    # The atomic fetch loses nothing and writes no result twice.
    assert ours.lost == 0, ours
    assert ours.duplicated == 0, ours
    assert ours.completed == JOBS, ours
    assert ours.extra["redelivered"] > 0, "jobs caught by the kills should have run again"
