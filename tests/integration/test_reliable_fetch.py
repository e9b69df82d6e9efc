"""The atomic fetch with a real redis-server and worker: what the fault tier does not aim at.

The fault tier (tests/faults/test_fetch_window.py) shows that a kill at the fetch loses
nothing; here: the worker really uses it, an emptied script cache, priorities, and the
stock fetch still selectable with REDIS_FETCH=brpop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.support.processes import LLMServer, RedisServer, Worker
from worker.runtime.reliable_redis import FETCH_SCRIPT, Transport

CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}


def test_workers_and_submitters_use_the_atomic_fetch(celery_app: Any) -> None:
    with celery_app.connection_for_read() as connection:
        assert isinstance(connection.transport, Transport)


def test_a_finished_job_leaves_nothing_queued_or_unacknowledged(
    submit: Callable[..., Any], redis_server: RedisServer
) -> None:
    job = submit("chat", CHAT)

    assert job.state == "SUCCESS"
    client = redis_server.client()
    assert client.hget("unacked", job.id) is None
    assert client.llen("kcw") == 0


def test_jobs_go_on_after_redis_forgets_the_fetch_script(
    submit: Callable[..., Any], redis_server: RedisServer, worker: Worker
) -> None:
    client = redis_server.client()
    sha = client.script_load(FETCH_SCRIPT)
    client.script_flush()
    assert client.script_exists(sha) == [False]

    jobs = [submit("chat", {**CHAT, "seed": n}) for n in range(3)]

    assert [job.state for job in jobs] == ["SUCCESS"] * 3
    assert worker.alive()


def test_a_job_sent_with_a_priority_is_taken_from_its_priority_list(
    celery_app: Any, redis_server: RedisServer
) -> None:
    job = celery_app.send_task("kcw.chat", args=[CHAT], priority=5)

    assert job.get(timeout=120)["finish_reason"] in ("length", "stop")
    assert redis_server.client().hget("unacked", job.id) is None


def test_redis_fetch_brpop_runs_jobs_with_stock_kombu(
    spawn_worker: Callable[..., tuple[Worker, Callable[..., Any]]], llm_server: LLMServer
) -> None:
    extra, submit_stock = spawn_worker(llm_server.url, REDIS_FETCH="brpop")

    job = submit_stock("chat", CHAT)

    assert job.state == "SUCCESS"
    assert extra.alive()
