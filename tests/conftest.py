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
from pathlib import Path
from typing import Any

import pytest

from tests.support.diagnostics import recent_logs
from tests.support.processes import (
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
    client.close()


@pytest.fixture()
def submit(celery_app: Any) -> Callable[..., Any]:
    """Send a job by name to the session's real worker and wait for it to end."""
    return submitter(celery_app)


@pytest.fixture(scope="session")
def spawn_worker(
    tmp_root: Path, redis_server: RedisServer
) -> Iterator[Callable[..., tuple[Worker, Callable[..., Any]]]]:
    """Start an extra worker on its own Redis db with other settings; returns it and a submit."""
    started: list[tuple[Worker, Any]] = []
    next_db = iter(range(1, 16))

    def spawn(llm_url: str, **overrides: str) -> tuple[Worker, Callable[..., Any]]:
        db = next(next_db)
        env = worker_env(redis_server, llm_url, REDIS_DB=str(db), **overrides)
        extra = start_worker(tmp_root, env, f"db{db}")
        app = client_app(redis_server, db)
        started.append((extra, app))
        return extra, submitter(app)

    yield spawn
    for extra, app in started:
        stop(extra.proc)
        app.close()


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
