"""Generated bad input through the real worker, and the count of every generated case.

Each bad job must end as a failed job with a clear error (a known error class naming what to
fix), never a crash of the worker or a job that hangs; the next good job still succeeds. The
same payloads against the input models and `kcw submit`, in-process, are in
`tests/unit/test_generated_input.py`; the last test here counts both and records the row of
the fault report.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.faults.ledger import WRITE
from tests.faults.report import Row
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
from tests.support.processes import Worker
from worker.client import JobClient
from worker.errors import InvalidJobInput
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


@pytest.fixture(scope="module")
def edge_case_jobs(celery_app: Any) -> Iterator[dict[str, Any]]:
    """The edge cases, sent once to the real worker at the start of the worker tests."""
    client = JobClient(app=celery_app)
    jobs = {
        name: client.submit(kind, payload).async_result
        for name, (kind, payload, _) in EDGE_CASES.items()
    }
    depth, jobs[DEEP_CASE] = deepest_sendable(celery_app, "kcw.chat")
    WORKER_FIGURES["deep case depth"] = depth
    yield jobs
    release(celery_app, list(jobs.values()))


def test_worker_fails_every_generated_bad_payload_clearly(
    celery_app: Any, worker: Worker, submit: Callable[..., Any], edge_case_jobs: dict[str, Any]
) -> None:
    sent: list[tuple[str, Any]] = []

    @generated(WORKER_EXAMPLES)
    @given(case=worker_cases())
    def send(case: tuple[str, Any]) -> None:
        name, payload = case
        kind = name.removeprefix("kcw.")
        if kind in MODELS:
            # Only payloads the worker refuses before any LLM call go out.
            with pytest.raises(InvalidJobInput):
                parse_input(MODELS[kind], kind, payload)
        sent.append((name, celery_app.send_task(name, args=[payload])))

    try:
        send()
        expected: dict[str, set[str]] = {}
        for name, payload, errors_allowed in FIXED_WORKER_CASES:
            job = celery_app.send_task(name, args=[payload])
            expected[job.id] = errors_allowed
            sent.append((name, job))
        CASES["worker"] = len(sent)

        started = time.monotonic()
        lost = wait_all([job for _, job in sent], WORKER_WAIT_S)
        waited = time.monotonic() - started
        lost_ids = {job.id for job in lost}
        problems = [
            f"{name}: {why}"
            for name, job in sent
            if job.id not in lost_ids
            and (why := unclear(name, job, expected.get(job.id))) is not None
        ]
        ids = {job.id for _, job in sent}
        writes = Counter(i for i in WRITE.findall(worker.output()) if i in ids)
        WORKER_FIGURES.update(
            submitted=len(sent),
            completed=sum(job.state == "SUCCESS" for _, job in sent),
            failed_clearly=len(sent) - len(lost) - len(problems),
            lost=len(lost),
            duplicated=sum(count > 1 for count in writes.values()),
            crashes=0 if worker.alive() else 1,
            result_writes_logged=sum(writes.values()),
            wait_s=round(waited, 1),
        )
        print(f"worker: {len(sent)} bad jobs ended in {waited:.1f}s, {len(lost)} lost")
        assert not lost, f"{len(lost)} jobs never ended: {[job.id for job in lost][:5]}"
        assert not problems, "\n".join(problems[:20])

        assert worker.alive()
        good = submit("chat", GOOD_CHAT, timeout=120)
        sent.append(("kcw.chat", good))
        assert good.successful(), good.result
        assert worker.alive()
    finally:
        release(celery_app, [job for _, job in sent])


def _wait_one(job: Any, timeout: float) -> None:
    wait_all([job], timeout)


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case_ends_as_invalid_input_in_the_worker(
    name: str, edge_case_jobs: dict[str, Any], worker: Worker
) -> None:
    job = edge_case_jobs[name]
    _wait_one(job, 30)
    assert job.state == "FAILURE", job.state
    error, message = type(job.result).__name__, str(job.result)
    assert error == "InvalidJobInput", f"{error}: {message}"
    assert worker.alive()


def test_payload_too_deep_to_decode_still_ends(
    edge_case_jobs: dict[str, Any], worker: Worker
) -> None:
    job = edge_case_jobs[DEEP_CASE]
    _wait_one(job, 3)  # the other worker tests ran meanwhile: a decodable job ended long ago
    assert job.state == "FAILURE", f"{job.state} after {WORKER_FIGURES['deep case depth']} levels"
    assert worker.alive()


# ---------------------------------------------------------------- the count


def test_zz_at_least_a_thousand_generated_cases(
    record: Callable[[Row], Row], tmp_path: Path
) -> None:
    count_unit_cases(tmp_path)  # the in-process and `kcw submit` layers, from the unit tier
    total = sum(CASES.values())
    extra: dict[str, float | int | str] = {
        "in-process cases": CASES["in-process"],
        "cli cases": CASES["cli"],
        "worker cases": CASES["worker"],
        "total": total,
        "hand-picked edge cases": len(EDGE_CASES) + 1 + len(CLI_EDGE_CASES),
        "longest error message (chars)": LONGEST_MESSAGE["chars"],
        "levels of the undecodable payload": WORKER_FIGURES.get("deep case depth", 0),
        "result writes logged": WORKER_FIGURES.get("result_writes_logged", 0),
    }
    record(
        Row(
            scenario="generated bad input",
            submitted=int(WORKER_FIGURES.get("submitted", 0)),
            completed=int(WORKER_FIGURES.get("completed", 0)),
            failed_clearly=int(WORKER_FIGURES.get("failed_clearly", 0)),
            lost=int(WORKER_FIGURES.get("lost", 0)),
            duplicated=int(WORKER_FIGURES.get("duplicated", 0)),
            note=(
                f"{total} generated cases, {int(WORKER_FIGURES.get('crashes', 0))} crashes, "
                f"{int(WORKER_FIGURES.get('lost', 0))} hangs"
            ),
            extra=extra,
        )
    )
    print(f"generated bad input: {dict(CASES)}, total {total}")
    assert total >= MIN_TOTAL, f"only {total} generated cases ran: {dict(CASES)}"
