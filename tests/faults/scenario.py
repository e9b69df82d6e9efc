"""One fault scenario's parts: its own redis-server, a client app, a ledger, and its workers.

The workers reach the LLM server through a `CountingProxy`, and a `StoredResults`
watcher counts every result written, so each ledger row reports executions and result
writes as they happened. Everything it started is stopped when the `with` block ends,
whatever the test did.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.faults.counting_proxy import CountingProxy
from tests.faults.ledger import Ledger
from tests.faults.stored_results import StoredResults
from tests.support.processes import (
    RedisServer,
    Worker,
    client_app,
    start_redis,
    start_worker,
    stop,
    worker_env,
)


@dataclass
class Scenario:
    tmp: Path
    broker: RedisServer
    app: Any
    ledger: Ledger
    env: dict[str, str]
    appendonly: bool
    workers: list[Worker] = field(default_factory=list)

    def new_ledger(self) -> Ledger:
        """Another ledger on the same Redis, proxy and watcher (its own list of jobs)."""
        ledger = self.ledger
        return Ledger(self.app, self.broker.client(), ledger.calls, ledger.stored)

    def start_worker(self, name: str) -> Worker:
        worker = start_worker(self.tmp, self.env, name)
        self.workers.append(worker)
        return worker

    @property
    def logs(self) -> list[Path]:
        return [worker.log for worker in self.workers]

    def restart_redis(self) -> None:
        """Start redis-server again on the same port and directory (after it was stopped)."""
        broker = self.broker
        self.broker = start_redis(
            self.tmp, broker.password, port=broker.port, appendonly=self.appendonly
        )
        self.ledger.redis_client = self.broker.client()


@contextmanager
def frozen(worker: Worker) -> Iterator[None]:
    """The worker takes and starts nothing inside the block (SIGSTOP), then carries on."""
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)


@contextmanager
def scenario(
    tmp: Path, llm_url: str, *, appendonly: bool = False, **overrides: str
) -> Iterator[Scenario]:
    """Workers sized to the server (as in production) unless WORKER_CONCURRENCY is given."""
    broker = start_redis(tmp, secrets.token_urlsafe(16), appendonly=appendonly)
    stored = StoredResults(broker.port, broker.password).start()
    upstream = urlsplit(llm_url).port
    assert upstream is not None, f"no port in {llm_url}"
    calls = CountingProxy(upstream).start()
    env = worker_env(broker, calls.url, **overrides)
    if "WORKER_CONCURRENCY" not in overrides:
        env.pop("WORKER_CONCURRENCY")
    app = client_app(broker)
    ledger = Ledger(app, broker.client(), calls, stored)
    parts = Scenario(tmp, broker, app, ledger, env, appendonly)
    try:
        yield parts
    finally:
        for worker in parts.workers:
            stop(worker.proc)
        app.close()
        calls.stop()
        stored.stop()
        stop(parts.broker.proc)
