"""Redis at its memory cap (maxmemory, noeviction): new jobs are refused with a message that
names the settings to change, and every job already queued stays queued."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import RedisServer, client_app, run_kcw, start_redis, worker_env
from worker.broker import close_app, refused_for_memory
from worker.client import JobClient
from worker.errors import QueueFull

PAYLOAD = {"messages": [{"role": "user", "content": "x" * 20_000}], "max_tokens": 1}


@pytest.fixture()
def full_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, list[str]]]:
    """A Redis of its own, filled with jobs until it refuses one; yields it and the queued ids."""
    server = start_redis(tmp_path, secrets.token_urlsafe(12), appendonly=True)
    client = server.client()
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 2_000_000)
    app = client_app(server)
    queued: list[str] = []
    try:
        with pytest.raises(Exception) as refused:
            for _ in range(1000):
                queued.append(app.send_task("kcw.chat", args=[PAYLOAD]).id)
        assert refused_for_memory(refused.value), refused.value
        yield server, queued
    finally:
        close_app(app)
        server.proc.kill()
        server.proc.wait()


def _queued_ids(server: RedisServer) -> list[str]:
    messages = server.client().lrange("kcw", 0, -1)
    return [json.loads(m)["headers"]["id"] for m in reversed(messages)]


def test_a_full_redis_refuses_a_job_at_submit_naming_the_settings(
    full_redis: tuple[RedisServer, list[str]], tmp_path: Path
) -> None:
    server, queued = full_redis
    assert len(queued) > 10, "the cap left room for a few jobs first"

    env = worker_env(server, "http://127.0.0.1:9")
    (tmp_path / "long.txt").write_text("y" * 50_000)  # no smaller than the jobs that filled it
    done = run_kcw(["submit", "chat", "@long.txt"], env, tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "kcw: Redis refused the job: it is full (" in done.stderr
    assert "used memory > 'maxmemory'" in done.stderr
    assert "Nothing already queued is lost" in done.stderr
    assert "REDIS_MEMORY_LIMIT" in done.stderr and "REDIS_MAXMEMORY" in done.stderr
    assert "Traceback" not in done.stderr
    assert _queued_ids(server) == queued, "every job queued before stays, in order"


def test_job_client_raises_queue_full_and_the_queue_takes_jobs_again_once_there_is_room(
    full_redis: tuple[RedisServer, list[str]],
) -> None:
    server, queued = full_redis
    with JobClient(server.worker_settings()) as client:
        with pytest.raises(QueueFull, match="REDIS_MEMORY_LIMIT"):
            client.submit("chat", PAYLOAD)
        server.client().config_set("maxmemory", 0)
        job = client.submit("chat", PAYLOAD)

    assert _queued_ids(server) == [*queued, job.id]
