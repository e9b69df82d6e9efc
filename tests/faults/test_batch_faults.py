"""The Batch API under faults: workers and `kcw serve` killed, Redis restarted, a batch cancelled.

Each test drives a real `kcw serve` with the official openai SDK (`files.create`,
`batches.create`, `batches.retrieve`, `files.content`) inside a fault scenario: its own
redis-server, and workers that reach the session's llama-server through a CountingProxy.
A line's job id is `<batch id>:<line>:<attempt>`, so the proxy tells, per line, how many
LLM requests it made and from how many runs.

The report's figures for a batch, all read from the run:

- completed: lines in the output file; failed clearly: lines in the error file whose
  error is one of ours with a message that says what happened;
- lost: input lines in neither file (for a cancelled batch: lines that called the model
  and are in neither file, since lines that never started are not lost but cancelled);
- duplicated: a `custom_id` written more than once over both files;
- executed more than once: lines that called the model from more than one run (a worker
  killed mid-line, or a line sent again); each is still written once;
- LLM requests: the requests the batch's lines sent to the model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from openai.types import Batch

from tests.faults.counting_proxy import Calls
from tests.faults.report import Record, Row
from tests.faults.scenario import Scenario, frozen, scenario
from tests.support.batches import chat_line, create_batch, read_lines, wait_while
from tests.support.processes import (
    ApiServer,
    LLMServer,
    Worker,
    api_client,
    start_api,
    stop,
    wait_until,
)
from worker import errors as kcw_errors

LINES = 300
MAX_TOKENS = 8
# Seconds before `kcw serve` sends a line with no outcome again (BATCH_LINE_TIMEOUT): well
# over what a line takes on a busy machine, since a line that is only slow is sent again
# too, and may then call the model twice (it is still written once).
LINE_TIMEOUT = 60
# A batch that makes no progress for this long is stuck (a bound, not a timed assertion):
# longer than a serve's lock running out (30 s) plus a line timeout plus a worker's start.
IDLE_S = 300
OVERDUE = re.compile(r"(\d+) lines overdue, sent again")
RESUMED = re.compile(r"batch (\S+) resumed: (\d+) lines done, (\d+) out")
SKIPPED = re.compile(r"Task kcw\.batch_line\[([^\]]+)\] succeeded in [\d.]+s: 'skipped \(batch")
RUNNING = ("validating", "in_progress")


# ---- Input and polling ------------------------------------------------------------------------
def prompts(n: int, max_tokens: int = MAX_TOKENS) -> list[dict[str, Any]]:
    """`n` chat lines, `line-<i>`, each prompt different (no shared prompt cache)."""
    return [
        chat_line(f"line-{i}", f"Count from {i} to {i + 5}, then stop.", max_tokens=max_tokens)
        for i in range(n)
    ]


def finished(batch: Batch) -> int:
    counts = batch.request_counts
    return 0 if counts is None else counts.completed + counts.failed


def wait_until_done(client: openai.OpenAI, batch_id: str, at_least: int) -> Batch:
    """Poll until `at_least` lines are finished or the batch leaves in_progress."""
    return wait_while(
        client, batch_id, lambda b: b.status in RUNNING and finished(b) < at_least, timeout=900
    )


def wait_for_end(client: openai.OpenAI, batch_id: str, worker: Worker | None = None) -> Batch:
    """Poll until the batch ends; fail if it stops moving for IDLE_S (it is stuck).

    With `worker`, fail at once (with its log's end) if that worker exits meanwhile.
    """
    last: tuple[str, int] | None = None
    since = time.monotonic()
    while True:
        if worker is not None:
            assert worker.alive(), f"the worker exited; {worker.tail()}"
        batch = client.batches.retrieve(batch_id)
        if batch.status not in (*RUNNING, "finalizing", "cancelling"):
            return batch
        now = (batch.status, finished(batch))
        if now != last:
            last, since = now, time.monotonic()
        assert time.monotonic() - since < IDLE_S, f"stuck at {batch.status}: {batch.request_counts}"
        time.sleep(0.5)


# ---- What the files hold, and what the lines sent to the model ------------------------------
@dataclass(frozen=True)
class Outcome:
    """A finished batch as the client sees it, and its lines' LLM traffic."""

    batch: Batch
    output: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    calls: dict[int, list[Calls]]

    @property
    def written(self) -> Counter[str]:
        """How many times each custom_id is in the output or error file."""
        return Counter(item["custom_id"] for item in (*self.output, *self.errors))

    @property
    def called(self) -> set[int]:
        """Lines that sent at least one request to the model."""
        return set(self.calls)


def line_calls(calls: dict[str, Calls], batch_id: str) -> dict[int, list[Calls]]:
    """The proxy's counts by line, over every attempt (`<batch id>:<line>:<attempt>`)."""
    found: defaultdict[int, list[Calls]] = defaultdict(list)
    for job_id, counted in calls.items():
        owner, _, rest = job_id.partition(":")
        if owner == batch_id:
            found[int(rest.split(":")[0])].append(counted)
    return dict(found)


def outcome(client: openai.OpenAI, batch: Batch, run: Scenario) -> Outcome:
    return Outcome(
        batch,
        read_lines(client, batch.output_file_id),
        read_lines(client, batch.error_file_id),
        line_calls(run.ledger.calls.calls(), batch.id),
    )


def _clear(item: dict[str, Any]) -> bool:
    error = item.get("error") or {}
    return error.get("code") in kcw_errors.__all__ and len(str(error.get("message", ""))) > 20


def batch_row(
    scenario_name: str, ended: Outcome, submitted: int, lost: int, note: str, **extra: Any
) -> Row:
    counts = ended.batch.request_counts
    assert counts is not None
    return Row(
        scenario=scenario_name,
        submitted=submitted,
        completed=len(ended.output),
        failed_clearly=sum(_clear(item) for item in ended.errors),
        lost=lost,
        duplicated=sum(n > 1 for n in ended.written.values()),
        executed_more_than_once=sum(
            sum(c.executions for c in runs) > 1 for runs in ended.calls.values()
        ),
        llm_requests=sum(c.requests for runs in ended.calls.values() for c in runs),
        note=note,
        extra={
            "status": ended.batch.status,
            "request_counts": f"{counts.completed} completed, {counts.failed} failed, "
            f"{counts.total} total",
            **extra,
        },
    )


def assert_counts_match_files(ended: Outcome, total: int) -> None:
    counts = ended.batch.request_counts
    assert counts is not None
    assert (counts.completed, counts.failed, counts.total) == (
        len(ended.output),
        len(ended.errors),
        total,
    ), counts


def assert_every_line_once(ended: Outcome, row: Row) -> None:
    """The batch completed with each input line in the output file exactly once."""
    assert ended.batch.status == "completed", ended.batch
    assert_counts_match_files(ended, LINES)
    assert row.duplicated == 0 and row.lost == 0, row
    assert sorted(ended.written) == sorted(f"line-{i}" for i in range(LINES))
    assert len(ended.output) == LINES, [item["error"] for item in ended.errors][:5]
    assert all(item["response"]["status_code"] == 200 for item in ended.output)


def sent_again(logs: list[Path]) -> int:
    """Lines `kcw serve` sent again because their outcome was overdue (from its logs)."""
    return sum(int(n) for log in logs for n in OVERDUE.findall(log.read_text(errors="replace")))


# ---- Processes and queues ---------------------------------------------------------------------
@contextmanager
def serving(run: Scenario) -> Iterator[Callable[..., ApiServer]]:
    """A `start(name, **kw)` for `kcw serve` processes on the scenario's Redis and settings.

    Every one it started is stopped when the block ends, whatever the test did.
    """
    started: list[ApiServer] = []

    def start(name: str, **kw: Any) -> ApiServer:
        api = start_api(run.tmp, run.env, name, **kw)
        started.append(api)
        return api

    try:
        yield start
    finally:
        for api in started:
            api.stop()


def _line_of(task_id: str, batch_id: str) -> int | None:
    owner, _, rest = task_id.partition(":")
    return int(rest.split(":")[0]) if owner == batch_id else None


def lines_of(task_ids: set[str], batch_id: str) -> set[int]:
    return {n for i in task_ids if (n := _line_of(i, batch_id)) is not None}


def held_jobs(client: redis.Redis) -> set[str]:
    """Jobs whose message a worker took and has not acknowledged (kombu's `unacked`)."""
    return {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}


def queued_jobs(client: redis.Redis) -> set[str]:
    """Jobs whose message waits in the queue, taken by no worker yet."""
    return {json.loads(raw)["headers"]["id"] for raw in client.lrange("kcw", 0, -1)}


def kill_worker(run: Scenario, batch_id: str, held_before: set[str]) -> set[str]:
    """kill -9 the newest worker at a moment it holds lines; returns the jobs it held.

    The worker is frozen to look (a line may end between a look and a kill otherwise),
    and thawed to try again if it holds none of the batch's lines just then. The visibility
    timeout outlasts the test, so what dead workers held stays in `unacked`.
    """
    worker, client = run.workers[-1], run.broker.client()
    deadline = time.monotonic() + 120
    while True:
        os.kill(worker.proc.pid, signal.SIGSTOP)
        jobs = held_jobs(client) - held_before
        if lines_of(jobs, batch_id):
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(10)
            return jobs
        os.kill(worker.proc.pid, signal.SIGCONT)
        assert time.monotonic() < deadline, "the worker never held a line of the batch"
        time.sleep(0.05)


# ---- The tests --------------------------------------------------------------------------------
# (finished lines to wait for, what to kill): the worker, kcw serve, the worker, the worker.
KILLS = ((40, "worker"), (100, "serve"), (160, "worker"), (220, "worker"))


@pytest.mark.timeout(1800)
def test_a_batch_outlives_three_worker_kills_and_a_serve_kill(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    """300 lines, each written once, though every process that runs them was kill -9ed.

    The visibility timeout stays at its default (half an hour), longer than the test, so
    a killed worker's lines come back only because `kcw serve` sends them again after
    BATCH_LINE_TIMEOUT; the queue's own restore after a kill is test_worker_killed.py's.
    """
    with (
        scenario(tmp_path, llm_server.url, BATCH_LINE_TIMEOUT=str(LINE_TIMEOUT)) as run,
        serving(run) as serve,
    ):
        run.start_worker("batch-0")
        apis = [serve("serve-0")]
        client = api_client(apis[0])
        batch_id = create_batch(client, prompts(LINES)).id
        started = time.monotonic()
        caught: list[int] = []
        held: set[str] = set()
        for n, (at, target) in enumerate(KILLS, start=1):
            before = wait_until_done(client, batch_id, at)
            assert before.status == "in_progress", f"the fault came too late: {before}"
            if target == "worker":
                jobs = kill_worker(run, batch_id, held)
                caught.append(len(lines_of(jobs, batch_id)))
                held |= jobs
                time.sleep(1)
                run.start_worker(f"batch-{n}")
            else:
                apis[-1].kill()
                # The same address and files; it takes over once the dead one's lock expires.
                apis.append(serve(f"serve-{n}", port=apis[0].port, data=apis[0].data))
                client = api_client(apis[-1])
        ended = outcome(client, wait_for_end(client, batch_id), run)
        resumed = RESUMED.findall(apis[-1].output())
        resent = sent_again([api.log for api in apis])
        row = record(
            batch_row(
                "Batch API: worker kill -9 x3, kcw serve kill -9",
                ended,
                LINES,
                lost=LINES - len(ended.written),
                note=f"{MAX_TOKENS}-token lines, BATCH_LINE_TIMEOUT {LINE_TIMEOUT} s",
                **{
                    "lines held by the killed workers": sum(caught),
                    "lines sent again": resent,
                    "lines done when kcw serve took over": int(resumed[0][1]) if resumed else -1,
                    "seconds": round(time.monotonic() - started, 1),
                },
            )
        )
        assert_every_line_once(ended, row)
        assert [batch for batch, _, _ in resumed] == [batch_id], "the new kcw serve resumed it"
        assert resent > 0, row


VISIBILITY = 60
DOWN_S = 5


@pytest.mark.timeout(1800)
def test_a_batch_outlives_a_redis_restart(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    """Redis with its AOF stops (SIGTERM, as `docker compose restart` does) mid-batch.

    BATCH_LINE_TIMEOUT is left to default to the visibility timeout, as in production.
    """
    with (
        scenario(
            tmp_path, llm_server.url, appendonly=True, REDIS_VISIBILITY_TIMEOUT=str(VISIBILITY)
        ) as run,
        serving(run) as serve,
    ):
        worker = run.start_worker("batch-redis")
        api = serve("serve-redis")
        client = api_client(api)
        batch_id = create_batch(client, prompts(LINES)).id
        started = time.monotonic()
        before = wait_until_done(client, batch_id, 100)
        assert before.status == "in_progress", f"the fault came too late: {before}"
        stop(run.broker.proc, signal.SIGTERM)
        time.sleep(DOWN_S)
        run.restart_redis()
        wait_until(api.healthy, 60, "kcw serve reaching Redis again")
        ended = outcome(client, wait_for_end(client, batch_id, worker), run)
        row = record(
            batch_row(
                "Batch API: Redis restart, AOF on",
                ended,
                LINES,
                lost=LINES - len(ended.written),
                note=f"down {DOWN_S} s with {finished(before)} of {LINES} lines finished",
                **{
                    "lines sent again": sent_again([api.log]),
                    "seconds": round(time.monotonic() - started, 1),
                },
            )
        )
        assert worker.alive() and api.alive(), "both reconnect by themselves"
        assert_every_line_once(ended, row)


CANCEL_LINES = 120
CANCEL_WINDOW = 24


@pytest.mark.timeout(900)
def test_a_cancelled_batch_starts_no_line_after_the_cancel(
    tmp_path: Path, llm_server: LLMServer, record: Record
) -> None:
    """Lines a worker already held may finish (and are kept); no other line calls the model.

    The worker is frozen (SIGSTOP) while the cancel lands and the queue, the lines the
    worker holds and the proxy's counts are read, so the three are one moment's truth.
    BATCH_WINDOW is larger than the worker's threads, so lines wait in the queue then.
    """
    with (
        scenario(
            tmp_path, llm_server.url, BATCH_WINDOW=str(CANCEL_WINDOW), BATCH_LINE_TIMEOUT="300"
        ) as run,
        serving(run) as serve,
    ):
        worker = run.start_worker("batch-cancel")
        api = serve("serve-cancel")
        client = api_client(api)
        batch_id = create_batch(client, prompts(CANCEL_LINES, max_tokens=24)).id
        before = wait_until_done(client, batch_id, 10)
        assert before.status == "in_progress", f"the cancel came too late: {before}"
        with frozen(worker):
            cancelling = client.batches.cancel(batch_id)
            broker = run.broker.client()
            queued = lines_of(queued_jobs(broker), batch_id)
            held = lines_of(held_jobs(broker), batch_id)
            called_before = set(line_calls(run.ledger.calls.calls(), batch_id))
        ended = outcome(client, wait_for_end(client, batch_id), run)
        started_after = ended.called - called_before
        in_files = {int(custom_id.split("-")[1]) for custom_id in ended.written}
        skipped = lines_of(set(SKIPPED.findall(worker.output())), batch_id)
        row = record(
            batch_row(
                "Batch API: cancel mid-run",
                ended,
                CANCEL_LINES,
                lost=len(ended.called - in_files),
                note=(
                    f"cancelled with {len(held)} lines held by the worker and {len(queued)} "
                    f"queued; {CANCEL_LINES - len(ended.called)} never started"
                ),
                **{
                    "held at the cancel": len(held),
                    "queued at the cancel": len(queued),
                    "called the model after the cancel": len(started_after),
                    "skipped at the check": len(skipped),
                    "never started": CANCEL_LINES - len(ended.called),
                },
            )
        )
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        assert ended.batch.status == "cancelled" and ended.batch.cancelled_at, ended.batch
        assert_counts_match_files(ended, CANCEL_LINES)
        assert row.duplicated == 0, row
        # Only a line a worker held at the cancel may still have called the model after it.
        assert started_after <= held, (started_after - held, held)
        # Lines were waiting, and the check stopped every one of them before the model.
        assert queued, "no line was waiting at the cancel: nothing to stop"
        assert not queued & ended.called, sorted(queued & ended.called)
        assert queued <= skipped, sorted(queued - skipped)
        # The lines that ran, before or after the cancel, finished and are in the files.
        assert ended.called == in_files, (ended.called ^ in_files, row)
        assert 10 <= len(in_files) < CANCEL_LINES
