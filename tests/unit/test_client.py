"""`JobClient` and `Job` against a real Celery app with in-memory broker and backend.

States are written straight into the result backend, the way a worker would write them,
so each test drives a job through PENDING, PROGRESS, SUCCESS or FAILURE without Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from worker.broker import QUEUE, RESULT_BACKEND, send_options
from worker.client import FINISHED, Job, JobClient, Progress
from worker.config import WorkerSettings, load_settings
from worker.errors import InvalidJobInput, JobWaitTimedOut, LLMError, UnknownJobKind

CHAT_PAYLOAD = {"messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def app() -> Iterator[Celery]:
    """A Celery app in memory, with its own queue so tests never see each other's messages."""
    app = Celery("t", broker="memory://", backend="cache+memory://", set_as_current=False)
    app.conf.task_always_eager = False
    app.conf.task_default_queue = f"q-{uuid.uuid4().hex}"
    yield app
    app.close()


def new_id() -> str:
    return uuid.uuid4().hex


def job_in(app: Celery, state: str | None = None, result: Any = None) -> Job:
    """A job whose backend holds `result` in `state` (PENDING when `state` is None)."""
    job_id = new_id()
    if state is not None:
        app.backend.store_result(job_id, result, state)
    return JobClient(app=app).job(job_id)


def failed_job(app: Celery, error: Exception) -> Job:
    job_id = new_id()
    app.backend.mark_as_failure(job_id, error)
    return JobClient(app=app).job(job_id)


def queued_messages(app: Celery) -> list[Any]:
    """Every message waiting in the app's default queue, taken off it."""
    messages = []
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(app.conf.task_default_queue)
        try:
            while len(queue):
                messages.append(queue.get(timeout=1))
        finally:
            queue.close()
    return messages


# --- reading a job ----------------------------------------------------------------------------


def test_an_unknown_job_is_pending_and_not_ready(app: Celery) -> None:
    job = job_in(app)

    assert job.status() == "PENDING"
    assert not job.ready()
    assert job.error() is None
    assert job.progress() is None
    assert job.describe() == "pending"


def test_a_pending_job_has_no_result_yet(app: Celery) -> None:
    job = job_in(app)

    with pytest.raises(JobWaitTimedOut, match=f"job {job.id} has not ended: it is pending"):
        job.result()


def test_a_successful_job_gives_its_result(app: Celery) -> None:
    job = job_in(app, "SUCCESS", {"text": "hello", "model": "m"})

    assert job.status() == "SUCCESS"
    assert job.ready()
    assert job.result() == {"text": "hello", "model": "m"}
    assert job.error() is None
    assert job.describe() == "success"


def test_a_result_that_is_not_an_object_is_wrapped(app: Celery) -> None:
    assert job_in(app, "SUCCESS", [1, 2]).result() == {"value": [1, 2]}


def test_finished_states_are_the_ready_ones(app: Celery) -> None:
    assert frozenset({"SUCCESS", "FAILURE", "REVOKED"}) == FINISHED
    for state in ("SUCCESS", "REVOKED"):
        assert job_in(app, state, None).ready()
    assert not job_in(app, "PROGRESS", {"stage": "x"}).ready()


def test_the_id_and_async_result_are_celerys(app: Celery) -> None:
    job_id = new_id()

    job = JobClient(app=app).job(job_id)

    assert job.id == job_id
    assert job.async_result.id == job_id
    assert job.kind is None


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_job_raises_its_own_error_class(app: Celery) -> None:
    job = failed_job(app, InvalidJobInput("Invalid input for kcw.chat: messages is empty"))

    assert job.status() == "FAILURE"
    assert job.ready()
    with pytest.raises(InvalidJobInput, match="messages is empty"):
        job.result()
    error = job.error()
    assert isinstance(error, InvalidJobInput)
    assert str(error) == "Invalid input for kcw.chat: messages is empty"


def test_a_failure_that_is_not_ours_is_reported_as_llm_error(app: Celery) -> None:
    job = failed_job(app, KeyError("usage"))

    with pytest.raises(LLMError, match="KeyError: 'usage'") as caught:
        job.result()

    assert isinstance(caught.value.__cause__, KeyError)
    assert isinstance(job.error(), KeyError)


def test_a_failure_stored_as_plain_text_becomes_llm_error() -> None:
    # Celery's backends always rebuild an exception; a stand-in result reaches the other branch.
    class Stored:
        id = "job-1"
        state = "FAILURE"
        result = "the worker crashed"

    error = Job(Stored()).error()

    assert isinstance(error, LLMError)
    assert str(error) == "the worker crashed"


# --- progress ---------------------------------------------------------------------------------


def test_progress_counts_the_chunks_that_are_done(app: Celery) -> None:
    chunks = [new_id(), new_id(), new_id()]
    app.backend.store_result(chunks[0], {"summary": "one"}, "SUCCESS")
    app.backend.mark_as_failure(chunks[2], LLMError("part failed"))
    job = job_in(app, "PROGRESS", {"stage": "summarizing parts", "chunk_ids": chunks})

    progress = job.progress()

    assert progress == Progress("summarizing parts", 2, 3)
    assert str(progress) == "summarizing parts: 2/3 done"
    assert job.describe() == "progress  summarizing parts: 2/3 done"
    assert not job.ready()


def test_progress_without_chunks_is_the_stage_alone(app: Celery) -> None:
    job = job_in(app, "PROGRESS", {"stage": "splitting"})

    assert job.progress() == Progress("splitting")
    assert job.describe() == "progress  splitting"


def test_progress_that_is_not_an_object_is_ignored(app: Celery) -> None:
    job = job_in(app, "PROGRESS", "half way")

    assert job.progress() is None
    assert job.describe() == "progress"
    assert job.info() == "half way"


# --- waiting ----------------------------------------------------------------------------------


def test_wait_returns_at_once_for_a_finished_job(app: Celery) -> None:
    job = job_in(app, "SUCCESS", {"text": "done"})
    ticks: list[tuple[float, str]] = []

    assert job.wait(0.0, on_tick=lambda elapsed, status: ticks.append((elapsed, status))) is job
    assert ticks == []


def test_wait_returns_once_the_job_ends(app: Celery) -> None:
    job = job_in(app)
    ticks: list[str] = []

    def worker_finishes(elapsed: float, status: str) -> None:
        ticks.append(status)
        app.backend.store_result(job.id, {"text": "late"}, "SUCCESS")

    assert job.wait(10.0, poll=0.001, on_tick=worker_finishes) is job
    assert ticks == ["pending"]
    assert job.result() == {"text": "late"}


def test_wait_gives_up_after_the_timeout_naming_the_job(app: Celery) -> None:
    job = job_in(app, "PROGRESS", {"stage": "splitting"})
    ticks: list[tuple[float, str]] = []

    with pytest.raises(JobWaitTimedOut) as caught:
        job.wait(0.05, poll=0.01, on_tick=lambda elapsed, status: ticks.append((elapsed, status)))

    message = str(caught.value)
    assert f"job {job.id} is still progress after 0.05s" in message
    assert f"`kcw result {job.id}`" in message
    assert isinstance(caught.value, TimeoutError)
    assert ticks
    assert all(status == "progress  splitting" for _, status in ticks)
    assert [elapsed for elapsed, _ in ticks] == sorted(elapsed for elapsed, _ in ticks)


# --- submitting -------------------------------------------------------------------------------


def test_submit_sends_the_kinds_task_with_the_payload_as_its_one_argument(app: Celery) -> None:
    job = JobClient(app=app).submit("chat", CHAT_PAYLOAD)

    [message] = queued_messages(app)
    args, kwargs, _ = message.payload
    assert message.headers["task"] == "kcw.chat"
    assert message.headers["id"] == job.id
    assert (args, kwargs) == ([CHAT_PAYLOAD], {})
    assert job.kind == "chat"
    assert job.status() == "PENDING"


def test_submit_refuses_an_unknown_kind_before_sending(app: Celery) -> None:
    with pytest.raises(UnknownJobKind, match="'nope'"):
        JobClient(app=app).submit("nope", {})

    assert queued_messages(app) == []


def test_send_queues_any_task_name(app: Celery) -> None:
    job = JobClient(app=app).send("kcw.summarize.chunk", {"text": "x"})

    [message] = queued_messages(app)
    assert message.headers["task"] == "kcw.summarize.chunk"
    assert job.kind is None


class RecordingApp:
    """Stands in for a Celery app: records what is sent and whether it was closed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []
        self.options: list[dict[str, Any]] = []
        self.closed = False

    def send_task(self, name: str, args: list[Any], **options: Any) -> Any:
        self.sent.append((name, args))
        self.options.append(options)

        class Sent:
            id = "sent-1"

        return Sent()

    def close(self) -> None:
        self.closed = True


def test_submit_passes_the_task_name_and_payload_to_send_task() -> None:
    app = RecordingApp()

    job = JobClient(app=app).submit("embed", {"texts": ["a"]})

    assert app.sent == [("kcw.embed", [{"texts": ["a"]}])]
    assert app.options == [send_options({"texts": ["a"]})]
    assert job.id == "sent-1"


def test_a_client_leaves_an_app_it_was_given_open() -> None:
    app = RecordingApp()

    with JobClient(app=app) as client:
        assert client.app is app

    assert not app.closed


def test_a_client_from_settings_has_its_own_app_configured_like_the_workers() -> None:
    settings = load_settings(
        WorkerSettings, _env_file=None, redis_host="redis.test", redis_port=6390
    )

    with JobClient(settings) as client:
        conf = client.app.conf
        assert conf.broker_url == "redis://redis.test:6390/0"
        assert conf.result_backend == f"{RESULT_BACKEND}+redis://redis.test:6390/0"
        assert conf.task_default_queue == QUEUE
        assert conf.task_serializer == "json"


def test_a_client_needs_settings_or_an_app() -> None:
    with pytest.raises(ValueError, match="needs settings or a Celery app"):
        JobClient()
