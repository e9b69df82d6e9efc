"""Generated bad input through the real worker, and the count of every generated case.

Each bad job must end as a failed job with a clear error (a known error class naming what to
fix), never a crash of the worker or a job that hangs; the next good job still succeeds. The
same payloads against the input models and `kcw submit`, in-process, are in
`tests/unit/test_generated_input.py`; the last test here counts both and records the row of
the fault report.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.faults.report import Row
from tests.faults.scenario import Scenario, scenario
from tests.support.generated import (
    CASES,
    CLI_EDGE_CASES,
    EDGE_CASES,
    GOOD_CHAT,
    KINDS,
    KNOWN_ERRORS,
    LONGEST_MESSAGE,
    MIN_TOTAL,
    MODELS,
    REGISTERED,
    WORKER_EXAMPLES,
    WORKER_FIGURES,
    WORKER_WAIT_S,
    certainly_bad,
    count_unit_cases,
    generated,
    nest,
)
from tests.support.processes import LLMServer, Worker
from worker.client import JobClient
from worker.errors import InvalidJobInput, JobWaitTimedOut
from worker.jobs.inputs import parse_input

# ---------------------------------------------------------------- layer 3: the real worker

OVER_CONTEXT_WORDS = "word " * 30_000  # about 30,000 tokens; the test server has 4,096
# Hand-written cases, each with the error classes it may end with.
CONTEXT_ERRORS = {"ContextLengthExceeded"}
FIXED_WORKER_CASES: list[tuple[str, Any, set[str]]] = [
    (
        "kcw.chat",
        {"messages": [{"role": "user", "content": OVER_CONTEXT_WORDS}], "max_tokens": 8},
        CONTEXT_ERRORS,
    ),
    (
        "kcw.extract",
        {"text": OVER_CONTEXT_WORDS, "schema": {"type": "object"}, "max_tokens": 8},
        CONTEXT_ERRORS,
    ),
    ("kcw.classify", {"text": OVER_CONTEXT_WORDS, "labels": ["spam", "ham"]}, CONTEXT_ERRORS),
    # The test server serves no embeddings; one that does must refuse the length instead.
    ("kcw.embed", {"texts": [OVER_CONTEXT_WORDS]}, {*CONTEXT_ERRORS, "EmbeddingsUnsupported"}),
    (
        "kcw.chat",
        {"messages": [{"role": "user", "content": "x" * 1_000_001}]},
        {"InvalidJobInput"},
    ),
    ("kcw.summarize", {"text": "x" * 5_000_001}, {"InvalidJobInput"}),
    ("kcw.nope", {"text": "hi"}, {"NotRegistered"}),
    ("kcw.", {"text": "hi"}, {"NotRegistered"}),
    ("kcw.CHAT", GOOD_CHAT, {"NotRegistered"}),
]
unknown_task_names = (
    st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
    .map(lambda name: f"kcw.{name}")
    .filter(lambda name: name not in REGISTERED)
)


@st.composite
def worker_cases(draw: st.DrawFn) -> tuple[str, Any]:
    if draw(st.integers(0, 19)) == 0:
        return draw(unknown_task_names), draw(st.sampled_from([GOOD_CHAT, {"text": "hi"}]))
    kind = draw(st.sampled_from(KINDS))
    return f"kcw.{kind}", draw(certainly_bad(kind))


def wait_all(jobs: list[Any], timeout: float) -> list[Any]:
    """Poll until every job is ready or the shared deadline passes; the ones still not ready."""
    deadline = time.monotonic() + timeout
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
        pending = [job for job in pending if not job.ready()]
        if pending:
            time.sleep(0.2)
    return pending


def release(app: Any, jobs: list[Any]) -> None:
    """Stop listening for these results while Redis is still up (not at garbage collection)."""
    for job in jobs:
        app.backend.remove_pending_result(job)


def unclear(name: str, job: Any, allowed: set[str] | None = None) -> str | None:
    """Why a finished bad job's error is not clear, or None when it is."""
    if job.state != "FAILURE":
        return f"ended {job.state}: {job.result!r:.200}"
    error, message = type(job.result).__name__, str(job.result)
    if error not in (allowed or KNOWN_ERRORS):
        return f"failed with {error}: {message:.200}"
    if not message.strip():
        return f"{error} with an empty message"
    kind = name.removeprefix("kcw.")
    if error == "InvalidJobInput" and not message.startswith(f"Invalid input for {kind}: "):
        return f"InvalidJobInput does not name the job: {message:.200}"
    if error == "NotRegistered" and name not in message:
        return f"NotRegistered does not name the task: {message:.200}"
    return None


def deepest_sendable(app: Any, task: str, top: int = 995, bottom: int = 940) -> tuple[int, Any]:
    """Send the most deeply nested payload the client can encode, from a fresh thread's stack."""
    sent: dict[str, Any] = {}

    def send() -> None:
        for depth in range(top, bottom, -5):
            try:
                sent["job"] = app.send_task(task, args=[{"messages": nest(depth, "list", "x")}])
            except Exception:  # kombu's EncodeError: too deep for this stack; try shallower
                continue
            sent["depth"] = depth
            return

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(30)
    assert "job" in sent, f"no payload between {bottom} and {top} levels could be encoded"
    return sent["depth"], sent["job"]


DEEP_CASE = "chat-nested-too-deep-for-the-worker-to-decode"


@dataclass
class WorkerRun:
    """Every bad job sent to a worker of its own, once, and what became of each."""

    run: Scenario
    worker: Worker
    sent: list[tuple[str, Any]]
    edge_jobs: dict[str, Any]
    lost: list[Any]
    problems: list[str]
    waited: float
    good: Any


@pytest.fixture(scope="module")
def worker_run(
    tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer
) -> Iterator[WorkerRun]:
    """Send the edge cases, the generated cases and the fixed ones; wait for all of them.

    Its own Redis and worker, so the result writes and LLM calls of exactly these jobs are
    counted, whichever test of this module runs first.
    """
    with scenario(tmp_path_factory.mktemp("generated"), llm_server.url) as run:
        worker = run.start_worker("generated")
        app, ledger = run.app, run.ledger

        def sent_raw(name: str, payload: Any) -> Any:
            job = app.send_task(name, args=[payload])
            ledger.ids.append(job.id)
            return job

        client = JobClient(app=app)
        edge_jobs = {}
        for case, (kind, payload, _) in EDGE_CASES.items():
            edge_jobs[case] = client.submit(kind, payload).async_result
            ledger.ids.append(edge_jobs[case].id)
        depth, edge_jobs[DEEP_CASE] = deepest_sendable(app, "kcw.chat")
        ledger.ids.append(edge_jobs[DEEP_CASE].id)
        WORKER_FIGURES["deep case depth"] = depth
        sent: list[tuple[str, Any]] = [("kcw.chat", job) for job in edge_jobs.values()]

        @generated(WORKER_EXAMPLES)
        @given(case=worker_cases())
        def send(case: tuple[str, Any]) -> None:
            name, payload = case
            kind = name.removeprefix("kcw.")
            if kind in MODELS:
                # Only payloads the worker refuses before any LLM call go out.
                with pytest.raises(InvalidJobInput):
                    parse_input(MODELS[kind], kind, payload)
            sent.append((name, sent_raw(name, payload)))

        send()
        expected: dict[str, set[str]] = {}
        for name, payload, errors_allowed in FIXED_WORKER_CASES:
            job = sent_raw(name, payload)
            expected[job.id] = errors_allowed
            sent.append((name, job))
        CASES["worker"] = len(sent) - len(edge_jobs)

        started = time.monotonic()
        lost = wait_all([job for _, job in sent], WORKER_WAIT_S)
        waited = time.monotonic() - started
        lost_ids = {job.id for job in lost}
        edge_ids = {job.id for job in edge_jobs.values()}
        problems = [
            f"{name}: {why}"
            for name, job in sent
            if job.id not in lost_ids
            and job.id not in edge_ids  # checked by their own tests
            and (why := unclear(name, job, expected.get(job.id))) is not None
        ]
        good = JobClient(app=app).submit("chat", GOOD_CHAT)
        with contextlib.suppress(JobWaitTimedOut):  # the test says so, with the job's state
            good.wait(120)
        print(f"worker: {len(sent)} bad jobs ended in {waited:.1f}s, {len(lost)} lost")
        try:
            yield WorkerRun(run, worker, sent, edge_jobs, lost, problems, waited, good)
        finally:
            release(app, [job for _, job in sent] + [good.async_result])


def test_worker_fails_every_generated_bad_payload_clearly(worker_run: WorkerRun) -> None:
    lost = worker_run.lost
    assert not lost, f"{len(lost)} jobs never ended: {[job.id for job in lost][:5]}"
    assert not worker_run.problems, "\n".join(worker_run.problems[:20])
    assert worker_run.worker.alive()
    good = worker_run.good
    assert good.status() == "SUCCESS", good.describe()
    assert worker_run.worker.alive()


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case_ends_as_invalid_input_in_the_worker(name: str, worker_run: WorkerRun) -> None:
    job = worker_run.edge_jobs[name]
    assert job.ready(), f"{name} never ended ({WORKER_WAIT_S:.0f} s)"
    assert job.state == "FAILURE", job.state
    error, message = type(job.result).__name__, str(job.result)
    assert error == "InvalidJobInput", f"{error}: {message}"
    assert worker_run.worker.alive()


def test_payload_too_deep_to_decode_still_ends(worker_run: WorkerRun) -> None:
    job = worker_run.edge_jobs[DEEP_CASE]
    depth = WORKER_FIGURES["deep case depth"]
    assert job.ready(), f"the {depth}-level payload never ended ({WORKER_WAIT_S:.0f} s)"
    assert job.state == "FAILURE", f"{job.state} after {depth} levels"
    assert worker_run.worker.alive()


# ---------------------------------------------------------------- the count


def test_at_least_a_thousand_generated_cases(
    record: Callable[[Row], Row], tmp_path: Path, worker_run: WorkerRun
) -> None:
    count_unit_cases(tmp_path)  # the in-process and `kcw submit` layers, from the unit tier
    total = sum(CASES.values())
    run = worker_run.run
    counted = run.ledger.row("generated bad input", run.logs)
    crashes = 0 if worker_run.worker.alive() else 1
    hangs = len(worker_run.lost)
    extra: dict[str, float | int | str] = {
        "in-process cases": CASES["in-process"],
        "cli cases": CASES["cli"],
        "worker cases": CASES["worker"],
        "total": total,
        "hand-picked edge cases": len(EDGE_CASES) + 1 + len(CLI_EDGE_CASES),
        "longest error message (chars)": LONGEST_MESSAGE["chars"],
        "levels of the undecodable payload": WORKER_FIGURES.get("deep case depth", 0),
        "results stored": counted.extra["results stored"],
        "seconds": round(worker_run.waited, 1),
    }
    record(
        replace(
            counted,
            # Clear by the stricter test of `unclear`: Celery's NotRegistered counts too.
            failed_clearly=counted.submitted - hangs - len(worker_run.problems),
            note=f"{total} generated cases, {crashes} crashes, {hangs} hangs",
            extra=extra,
        )
    )
    print(f"generated bad input: {dict(CASES)}, total {total}")
    assert total >= MIN_TOTAL, f"only {total} generated cases ran: {dict(CASES)}"
