"""The atomic fetch with a real redis-server and worker: what the fault tier does not aim at.

The fault tier (tests/faults/test_fetch_window.py) shows that a kill at the fetch loses
nothing; here: the worker really uses it, an emptied script cache, priorities, and the
stock fetch still selectable with REDIS_FETCH=brpop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from queue import Empty
from typing import Any

import pytest
from kombu import Connection
from kombu import Consumer as KombuConsumer
from kombu import Queue as KombuQueue

from tests.support.processes import RELIABLE_FETCH_DB, LLMServer, RedisServer, Worker
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


def _fetch(client: Any, *queues: str) -> Any:
    return client.eval(FETCH_SCRIPT, 2 + len(queues), "unacked", "unacked_index", *queues, "1.5")


def _message(tag: str, text: str) -> str:
    body = {"headers": {"argsrepr": text}, "body": "e30="}
    return json.dumps({**body, "properties": {"delivery_tag": tag, **DELIVERY}})


DELIVERY = {"delivery_info": {"exchange": "", "routing_key": "q"}}


def test_the_script_records_what_it_takes_even_when_cjson_cannot_read_it(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client(db=RELIABLE_FETCH_DB)  # a db no worker reads
    client.flushdb()
    client.lpush("q", _message("plain", "['hi']"))
    client.lpush("q", _message("surrogate", "['\ud800']"))  # cjson refuses \\ud800
    client.lpush("q", "not json")

    taken = [_fetch(client, "q", "q-high") for _ in range(4)]

    assert [(key, recorded) for key, _, recorded in taken[:3]] == [
        (b"q", 1),
        (b"q", 1),
        (b"q", 0),  # handed out unrecorded: the worker records it, as stock kombu does
    ]
    assert taken[3] is None
    entries = {tag: json.loads(raw) for tag, raw in client.hgetall("unacked").items()}
    assert set(entries) == {b"plain", b"surrogate"}
    assert entries[b"surrogate"][1:] == ["", "q"]
    assert entries[b"surrogate"][0] == json.loads(_message("surrogate", "['\ud800']"))
    assert client.zscore("unacked_index", "plain") == 1.5
    client.flushdb()


def test_the_script_takes_from_the_first_queue_that_holds_a_message(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client(db=RELIABLE_FETCH_DB)
    client.flushdb()
    client.lpush("q-low", _message("low", "x"))
    client.lpush("q-high", _message("high", "x"))

    first = _fetch(client, "q-high", "q-low")
    second = _fetch(client, "q-high", "q-low")

    assert (first[0], second[0]) == (b"q-high", b"q-low")
    client.flushdb()


def test_a_queued_message_that_is_not_a_task_is_dropped_and_the_worker_goes_on(
    submit: Callable[..., Any], redis_server: RedisServer, worker: Worker
) -> None:
    client = redis_server.client()
    client.lpush("kcw", "not json at all")
    client.lpush("kcw", json.dumps({"body": "e30=", "properties": {"delivery_tag": "odd"}}))

    job = submit("chat", CHAT)

    assert job.state == "SUCCESS"
    assert worker.alive()
    assert "dropped a message from Redis that is not a task message" in worker.output()
    assert client.hget("unacked", "odd") is None


def test_an_ack_on_a_channel_closed_under_it_is_a_connection_error(
    celery_app: Any,
) -> None:
    """A job that ends after Redis went away acks on a closed channel: kombu's connection
    error (which Celery recovers from by reconnecting), not an AttributeError that stops
    the worker."""
    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client:
            assert client.ping()
        channel.close()  # as kombu does when the connection to Redis is lost
        assert channel.connection is None

        with pytest.raises(tuple(connection.connection_errors)):
            channel.qos.ack("a-delivery-tag")


def test_an_idle_channel_takes_a_message_with_the_reply_to_its_wait(
    redis_server: RedisServer,
) -> None:
    """The wait and the fetch go out together: the reply that ends an idle wait already
    holds the message, recorded in `unacked`, with no second round trip."""
    url = f"redis://:{redis_server.password}@127.0.0.1:{redis_server.port}/{RELIABLE_FETCH_DB}"
    redis_server.client(db=RELIABLE_FETCH_DB).flushdb()
    got: list[Any] = []
    with Connection(url, transport=Transport) as connection:
        channel = connection.default_channel
        queue = KombuQueue("idle-q", routing_key="idle-q")
        consumer = KombuConsumer(channel, [queue], callbacks=[lambda body, _m: got.append(body)])
        consumer.consume()
        connection.transport.cycle._register_BRPOP(channel)  # the first fetch goes out
        with pytest.raises(Empty):
            channel._brpop_read()  # nothing queued: the channel now waits
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key="idle-q", declare=[queue])

        assert channel._brpop_read() is True  # one read: the wait's reply and the message
        assert got == [{"n": 1}]
        client = redis_server.client(db=RELIABLE_FETCH_DB)
        assert client.hlen("unacked") == 1
        assert client.llen("idle-q") == 0
        consumer.cancel()
    redis_server.client(db=RELIABLE_FETCH_DB).flushdb()
