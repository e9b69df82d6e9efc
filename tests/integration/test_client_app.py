"""Client apps: what a submitted job looks like in the queue, and `close_app` leaves no Redis
connection open behind it."""

from __future__ import annotations

import base64
import json

from tests.support.processes import RELIABLE_FETCH_DB, RedisServer, client_app
from worker.broker import QUEUE, close_app
from worker.client import JobClient


def connections_on(redis_server: RedisServer, db: int) -> int:
    with redis_server.client() as admin:
        return sum(1 for entry in admin.client_list() if int(entry["db"]) == db)


def test_close_app_closes_the_result_backends_connections(redis_server: RedisServer) -> None:
    db = RELIABLE_FETCH_DB  # no worker reads it
    before = connections_on(redis_server, db)
    app = client_app(redis_server, db)
    assert app.AsyncResult("no-such-job").state == "PENDING"  # a read through the backend
    assert connections_on(redis_server, db) > before
    close_app(app)
    assert connections_on(redis_server, db) == before


def test_a_submitted_job_lands_in_the_queue_with_a_summary_of_its_payload(
    redis_server: RedisServer,
) -> None:
    db = RELIABLE_FETCH_DB  # no worker reads it
    with redis_server.client(db=db) as rds:
        rds.flushdb()
        app = client_app(redis_server, db)
        try:
            payload = {"messages": [{"role": "user", "content": "a secret prompt"}]}
            job = JobClient(app=app).submit("chat", payload)
            # Nothing declared first: the push alone makes the queue.
            raw = rds.lpop(QUEUE)
        finally:
            close_app(app)
            rds.flushdb()
    assert raw is not None
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["id"] == job.id and headers["task"] == "kcw.chat"
    assert headers["argsrepr"] == "({'messages': …},)"
    assert "secret" not in json.dumps(headers)
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == [payload]  # the payload itself travels in the body
