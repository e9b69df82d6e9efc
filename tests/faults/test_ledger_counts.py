"""The fault report's counters can see what they claim to: checked against known events.

A job run twice must show as executed more than once, yet not as a duplicated result:
Celery keeps a stored SUCCESS rather than overwrite it. A second final result written
with no worker behind it (as two runs racing past that check would) must count as a
duplicated result. If the counters missed either, every 0 in the report's "duplicated
results" and "executed more than once" columns would prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.ledger import chat
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer, wait_until


def test_the_ledger_counts_a_second_run_and_a_second_result_apart(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    with scenario(tmp_path, llm_server.url) as run:
        worker = run.start_worker("counts")
        ledger, stored, backend = run.ledger, run.ledger.stored, run.app.backend
        twice = ledger.submit("chat", chat(1, max_tokens=4))
        raced = ledger.submit("chat", chat(2, max_tokens=4))
        once = ledger.submit("chat", chat(3, max_tokens=4))
        ledger.wait(60)
        assert not ledger.lost_ids()
        assert stored.writes() == {twice: 1, raced: 1, once: 1}

        # The same job id as a new message: the worker runs it again, calling the model again.
        run.app.send_task("kcw.chat", args=[chat(1, max_tokens=4)], task_id=twice)
        wait_until(
            lambda: worker.output().count(f"[{twice}] succeeded in") == 2, 60, "the second run"
        )
        # A second final state written straight to the key, past Celery's keep-SUCCESS check.
        key = backend.get_key_for_task(raced)
        meta = json.loads(run.broker.client().get(key) or b"{}")
        backend.set(key, json.dumps({**meta, "result": {"text": "written twice"}}))
        wait_until(lambda: stored.writes()[raced] == 2, 30, "the second write")

        row = ledger.row("counter check", run.logs)
        assert row.completed == 3 and row.lost == 0, row
        assert stored.writes()[twice] == 1, "Celery kept the first SUCCESS"
        assert row.duplicated == 1, row  # `raced` only
        assert row.executed_more_than_once == 1, row  # `twice` only
        assert row.llm_requests == 4, row
