"""SIGTERM the worker mid-run: in-flight jobs finish, the rest go back to the queue at once.

The visibility timeout keeps its production value here, so a job that a stopping
worker failed to hand back would not come back within the test: it would be lost.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.faults.ledger import RECEIVED, SUCCEEDED, chat, queue_is_empty
from tests.faults.report import Record
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer, wait_until

JOBS = 60


def test_sigterm_finishes_in_flight_jobs_and_hands_back_the_rest(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    with scenario(tmp_path, llm_server.url) as run:
        ledger = run.ledger
        first = run.start_worker("term")
        for n in range(JOBS):
            ledger.submit("chat", chat(n, max_tokens=48))
        wait_until(lambda: ledger.finished() >= 5, 180, "the first jobs")
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(120)
        finished_by_first = ledger.finished()
        received = set(RECEIVED.findall(first.output()))
        ended = set(SUCCEEDED.findall(first.output()))
        assert received == ended, "every job the first worker started, it finished"
        assert run.broker.client().hlen("unacked") == 0, "nothing left delivered but unacked"
        run.start_worker("after-term")
        waited = ledger.wait(timeout=180)
        row = record(
            ledger.row(
                "worker SIGTERM (warm shutdown)",
                run.logs,
                note=f"{finished_by_first} finished before exit, the rest by a new worker",
                seconds=round(waited, 1),
            )
        )
        assert row.completed == JOBS and row.lost == 0 and row.duplicated == 0, row
        assert first.proc.returncode == 0
        assert queue_is_empty(run.broker.client())
