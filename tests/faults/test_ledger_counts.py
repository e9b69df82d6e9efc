"""The fault report's counters can see what they claim to: checked against known events.

A job run twice must show as executed more than once and as a duplicated result; a
result written with no worker log line at all (as by a worker killed before it logged)
must still count as a second write. If the counters missed either, every 0 in the
report's "duplicated results" and "executed more than once" columns would prove nothing.
"""

from __future__ import annotations

from pathlib import Path

from tests.faults.ledger import chat
from tests.faults.scenario import scenario
from tests.support.processes import LLMServer, wait_until


def test_the_ledger_counts_a_second_run_and_a_result_no_log_line_shows(
    tmp_path: Path, llm_server: LLMServer
) -> None:
    with scenario(tmp_path, llm_server.url) as run:
        run.start_worker("counts")
        ledger, stored = run.ledger, run.ledger.stored
        twice = ledger.submit("chat", chat(1, max_tokens=4))
        quiet = ledger.submit("chat", chat(2, max_tokens=4))
        once = ledger.submit("chat", chat(3, max_tokens=4))
        ledger.wait(60)
        assert not ledger.lost_ids()

        # The same job id as a new message: the worker runs it again and stores a result again.
        run.app.send_task("kcw.chat", args=[chat(1, max_tokens=4)], task_id=twice)
        wait_until(lambda: stored.writes()[twice] == 2, 60, "the second run's result")
        # A second result with no worker behind it: no log line, no LLM call.
        run.app.backend.store_result(quiet, {"text": "written twice"}, "SUCCESS")
        wait_until(lambda: stored.writes()[quiet] == 2, 30, "the silent write")

        row = ledger.row("counter check", run.logs)
        assert row.completed == 3 and row.lost == 0, row
        assert row.duplicated == 2, row  # `twice` and `quiet`, not `once`
        assert row.executed_more_than_once == 1, row  # only `twice` called the model twice
        assert row.llm_requests == 4, row
        assert stored.writes()[once] == 1
