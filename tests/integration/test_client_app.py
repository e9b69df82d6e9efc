"""A client app closed with `close_app` leaves no Redis connection open behind it."""

from __future__ import annotations

from tests.support.processes import RELIABLE_FETCH_DB, RedisServer, client_app
from worker.broker import close_app


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
