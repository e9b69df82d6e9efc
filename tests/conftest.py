"""Session fixtures shared by the integration and fault tiers: one real Redis, llama.cpp server
and worker per session.

Every process runs on a free port on 127.0.0.1, from a temporary directory with no `.env`,
and is stopped when its fixture ends. Fixtures start nothing until a test asks for them, so
the unit tier starts no process.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.diagnostics import recent_logs
from tests.support.processes import (
    BATCH_FEEDER_DB,
    RELIABLE_FETCH_DB,
    LLMServer,
    RedisServer,
    Worker,
    client_app,
    start_launcher,
    start_redis,
    start_worker,
    stop,
    submitter,
    worker_env,
)
from tests.support.skips import report_skips
from worker.broker import close_app


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kcw")


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_root, secrets.token_urlsafe(16))
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def llm_server(tmp_root: Path) -> Iterator[LLMServer]:
    """The launcher with its default engine: llama.cpp's llama-server."""
    server = start_launcher(tmp_root, LLAMACPP_ENGINE="server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(tmp_root: Path, redis_server: RedisServer, llm_server: LLMServer) -> Iterator[Worker]:
    proc = start_worker(tmp_root, worker_env(redis_server, llm_server.url), "main")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="session")
def celery_app(redis_server: RedisServer, worker: Worker) -> Iterator[Any]:
    client = client_app(redis_server)
    yield client
    close_app(client)


@pytest.fixture()
def submit(celery_app: Any) -> Callable[..., Any]:
    """Send a job by name to the session's real worker and wait for it to end."""
    return submitter(celery_app)


class Spawner:
    """Extra workers, each on a Redis db of its own that it empties first, so nothing an
    earlier test left there (queued jobs, batch state) reaches it.

    A db is given back, and its worker stopped, when the fixture that asked for it ends.
    """

    def __init__(self, tmp_root: Path, redis_server: RedisServer) -> None:
        self.tmp_root, self.redis_server = tmp_root, redis_server
        self.free = [db for db in range(1, 16) if db not in (RELIABLE_FETCH_DB, BATCH_FEEDER_DB)]

    @contextmanager
    def scope(self) -> Iterator[Callable[..., tuple[Worker, Callable[..., Any]]]]:
        started: list[tuple[int, Worker, Any]] = []

        def spawn(llm_url: str, **overrides: str) -> tuple[Worker, Callable[..., Any]]:
            if not self.free:
                raise RuntimeError("every Redis db for extra test workers is in use")
            db = self.free.pop(0)
            try:
                with self.redis_server.client(db=db) as rds:
                    rds.flushdb()
                env = worker_env(self.redis_server, llm_url, REDIS_DB=str(db), **overrides)
                extra = start_worker(self.tmp_root, env, f"db{db}")
            except BaseException:
                self.free.append(db)  # a worker that did not start holds no db
                raise
            app = client_app(self.redis_server, db)
            started.append((db, extra, app))
            return extra, submitter(app)

        try:
            yield spawn
        finally:
            for db, extra, app in started:
                stop(extra.proc)
                close_app(app)
                self.free.append(db)


@pytest.fixture(scope="session")
def spawner(tmp_root: Path, redis_server: RedisServer) -> Spawner:
    return Spawner(tmp_root, redis_server)


@pytest.fixture(scope="session")
def session_spawn(spawner: Spawner) -> Iterator[Callable[..., tuple[Worker, Callable[..., Any]]]]:
    """Start an extra worker that lives for the session; returns it and a submit."""
    with spawner.scope() as spawn:
        yield spawn


@pytest.fixture()
def spawn_worker(spawner: Spawner) -> Iterator[Callable[..., tuple[Worker, Callable[..., Any]]]]:
    """Start an extra worker, with other settings, for this test; returns it and a submit."""
    with spawner.scope() as spawn:
        yield spawn


_SKIPPED: list[pytest.TestReport] = []
_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report also shows the end of each process log written while it ran."""
    report: pytest.TestReport = yield
    factory = getattr(item.config, "_tmp_path_factory", None)
    if report.failed and factory is not None and _STARTED in item.stash:
        for title, text in recent_logs([factory.getbasetemp()], item.stash[_STARTED]):
            report.sections.append((title, text))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _SKIPPED.append(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report_skips(session, _SKIPPED)
