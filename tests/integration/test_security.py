"""Messages are JSON only: a pickled message is refused by the worker and never executed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.processes import RedisServer, Worker, client_app, submitter


class RunsShellOnLoad:
    """Unpickling this runs a shell command: what an attacker with Redis access would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_message_is_refused_and_never_executed(
    tmp_path: Path, redis_server: RedisServer, worker: Worker, celery_app: Any
) -> None:
    marker = tmp_path / "pwned"
    attacker = client_app(redis_server)
    attacker.conf.update(task_serializer="pickle", accept_content=["pickle", "json"])
    try:
        job = attacker.send_task("kcw.chat", args=[RunsShellOnLoad(marker)])
        deadline = time.monotonic() + 20
        while "pickle" not in worker.output() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        attacker.close()
    assert "Refusing to deserialize untrusted content of type pickle" in worker.output()
    assert not marker.exists()
    # The sender is not left waiting: the job ends as failed, saying why.
    refused = celery_app.AsyncResult(job.id)
    deadline = time.monotonic() + 10
    while not refused.ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert refused.state == "FAILURE"
    assert "JSON only" in str(refused.result)
    assert worker.alive()
    good = submitter(celery_app)("chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert good.successful(), good.result


def test_redis_refuses_a_client_without_the_password(redis_server: RedisServer) -> None:
    anonymous = redis.Redis(port=redis_server.port, socket_timeout=5)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError), match=r"(?i)auth"):
            anonymous.ping()
    finally:
        anonymous.close()
    assert redis_server.client().ping()
