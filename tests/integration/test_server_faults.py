"""Server-side problems through a real worker: unknown model, wrong API key, server unreachable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import LLMServer, free_port, start_launcher, wait_until

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
Spawn = Callable[..., Any]


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    server = start_launcher(tmp_path_factory.mktemp("keyed"), LLM_API_KEY="right-key-123")
    yield server
    server.stop()


def test_unknown_model_fails_naming_llm_model_and_the_served_models(
    spawn_worker: Spawn, llm_server: LLMServer
) -> None:
    _, submit = spawn_worker(llm_server.url, LLM_MODEL="gpt-17-ultra")
    job = submit("chat", CHAT, timeout=60)
    assert job.failed()
    assert type(job.result).__name__ == "ModelNotFound"
    message = str(job.result)
    assert "LLM_MODEL='gpt-17-ultra'" in message
    assert "SmolLM2-135M-Instruct.Q4_1" in message


def test_wrong_api_key_fails_at_once_naming_llm_api_key(
    spawn_worker: Spawn, keyed_server: LLMServer
) -> None:
    worker, submit = spawn_worker(keyed_server.url, LLM_API_KEY="wrong-key-456")
    started = time.monotonic()
    job = submit("chat", CHAT, timeout=60)
    assert job.failed()
    assert type(job.result).__name__ == "AuthenticationFailed"
    assert "LLM_API_KEY" in str(job.result)
    assert "wrong-key-456" not in str(job.result)
    assert time.monotonic() - started < 15, "an auth failure must not be retried"
    assert "wrong-key-456" not in worker.output()


def test_right_api_key_is_sent_end_to_end(spawn_worker: Spawn, keyed_server: LLMServer) -> None:
    worker, submit = spawn_worker(keyed_server.url, LLM_API_KEY="right-key-123")
    job = submit("chat", CHAT, timeout=60)
    assert job.successful(), job.result
    # The key and the Redis password stay out of logs and results (the launcher hands the
    # key to llama-server in its environment, not on the command line it logs).
    secrets = ["right-key-123", worker.env["REDIS_PASSWORD"]]
    for text in (worker.output(), keyed_server.log.read_text(), str(job.result)):
        assert not [secret for secret in secrets if secret in text]


def test_unreachable_server_is_retried_then_fails_with_llm_unavailable(
    spawn_worker: Spawn,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    worker, submit = spawn_worker(
        dead,
        LLM_RETRY_ATTEMPTS="2",
        LLM_RETRY_MAX_WAIT="0.2",
        TASK_MAX_RETRIES="2",
        TASK_RETRY_BACKOFF_MAX="1",
    )
    job = submit("chat", CHAT, timeout=120)
    assert job.failed()
    assert type(job.result).__name__ == "LLMServerDown"  # an LLMUnavailable: retried
    assert "LLM_SERVER_URL" in str(job.result)
    assert worker.output().count("Retry in") == 2, "retried TASK_MAX_RETRIES times, then failed"


def test_server_that_comes_back_lets_queued_jobs_finish(
    spawn_worker: Spawn, tmp_path: Path
) -> None:
    port = free_port()
    extra, submit = spawn_worker(
        f"http://127.0.0.1:{port}",
        LLM_RETRY_MAX_WAIT="1",
        TASK_MAX_RETRIES="10",
        TASK_RETRY_BACKOFF_MAX="2",
    )
    holder: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: holder.update(job=submit("chat", CHAT, timeout=180)))
    thread.start()
    # Start the server only once the job has been put back to retry against the closed port.
    wait_until(lambda: "Retry in" in extra.output(), 60, "the job's first retry")
    server = start_launcher(tmp_path, port=port)
    try:
        thread.join(180)
        job = holder["job"]
        assert job.successful(), job.result
        assert job.result["text"] is not None
    finally:
        server.stop()
