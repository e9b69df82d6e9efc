"""Phases through Redis: (b) our pipeline and (c) naive prefork Celery, plus the client-side
latency of single jobs.

Jobs are sent with `send_task` and their results read from the result backend by the
client, so every time is taken at the client, as for (a).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.phase import Completion
from worker.broker import make_app
from worker.client import JobClient
from worker.ops.processes import spawn, stop, wait_until
from worker.ops.redis_server import RedisServer
from worker.ops.workers import worker_argv

__all__ = ["celery_worker", "client_app", "pool_size", "run_jobs", "single_latency"]

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[1]
READY = {"SUCCESS", "FAILURE", "REVOKED"}
RESULT_PREFIX = "celery-task-meta-"
SWEEP_S = 5.0


def client_app(server: RedisServer, db: int = 0) -> Celery:
    """A submitting app on the bench's Redis, configured like the workers (not from .env)."""
    app: Celery = make_app(server.worker_settings(db), main="kcw-bench")
    return app


@contextmanager
def celery_worker(
    tmp: Path, env: dict[str, str], app: Celery, name: str, module: str, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A <module> worker --loglevel=warning [extra]`, stopped on exit."""
    log = tmp / f"worker-{name}.log"
    argv = worker_argv(
        app=module, loglevel="warning", hostname=f"{name}@%h", quiet=True, extra=extra
    )
    full_env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}
    proc = spawn(argv, log, full_env, cwd=tmp)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{log.read_text()[-3000:]}")
            replies = app.control.ping(timeout=0.5) or []
            return any(name in key for reply in replies for key in reply)

        wait_until(ready, 90, f"celery worker {name}")
        yield proc
    finally:
        stop(proc, timeout=30)


def pool_size(app: Celery, name: str) -> int:
    """The pool size the worker chose (it sizes itself to the servers by default)."""
    stats = app.control.inspect(timeout=2).stats() or {}
    for node, info in stats.items():
        if node.startswith(f"{name}@"):
            return int(info["pool"]["max-concurrency"])
    raise RuntimeError(f"worker {name} did not report its pool")


def _tokens(meta: JSON) -> int:
    result = meta.get("result")
    if meta.get("status") != "SUCCESS" or not isinstance(result, dict):
        return 0
    usage = result.get("usage") or {}
    return int(usage.get("completion_tokens", 0))


def _outcome(meta: JSON | None) -> tuple[bool, int] | None:
    """(succeeded, generated tokens) of a final state; None while the job is not done."""
    if not meta or meta.get("status") not in READY:
        return None
    return meta["status"] == "SUCCESS", _tokens(meta)


def run_jobs(
    app: Celery, rds: redis.Redis, task: str, bodies: list[JSON], timeout: float = 3600
) -> list[Completion]:
    """Send every job at once, then read each result as it is stored.

    Celery's Redis backend publishes every state on `celery-task-meta-<id>`; subscribed to
    that pattern, the client learns of a result when it lands, without polling (which
    would take CPU from the server under test). The stored keys are read every few seconds
    as well, in case a message was missed.
    """
    pubsub = rds.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.psubscribe(f"{RESULT_PREFIX}*")
    client = JobClient(app=app)
    sent: dict[str, float] = {}
    for body in bodies:
        at = time.time()
        sent[client.send(task, body).id] = at
    done: dict[str, Completion] = {}
    failures: list[Any] = []

    def finish(task_id: str, meta: JSON | None, now: float) -> None:
        outcome = _outcome(meta)
        if outcome is None or task_id in done or task_id not in sent:
            return
        if not outcome[0]:
            failures.append((meta or {}).get("result"))
        done[task_id] = Completion(sent[task_id], now, outcome[1], outcome[0])

    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic() + SWEEP_S
    try:
        while len(done) < len(sent):
            if time.monotonic() > deadline:
                missing = len(sent) - len(done)
                raise TimeoutError(f"{missing} {task} jobs still pending after {timeout}s")
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "pmessage":
                task_id = message["channel"].decode()[len(RESULT_PREFIX) :]
                finish(task_id, json.loads(message["data"]), time.time())
            if time.monotonic() >= next_sweep:
                pending = [i for i in sent if i not in done]
                values = rds.mget([f"{RESULT_PREFIX}{i}" for i in pending])
                now = time.time()
                for task_id, raw in zip(pending, values, strict=True):
                    finish(task_id, json.loads(raw) if raw else None, now)
                next_sweep = time.monotonic() + SWEEP_S
    finally:
        pubsub.close()
    if failures:
        print(f"  {task}: {len(failures)} jobs failed, e.g. {failures[0]}", flush=True)
    return list(done.values())


def single_latency(app: Celery, task: str, body: JSON) -> float:
    """Seconds from `send_task` to the result read back by the client, one job alone."""
    client = JobClient(app=app)
    started = time.perf_counter()
    result = client.send(task, body).async_result.get(timeout=600)
    elapsed = time.perf_counter() - started
    if not isinstance(result, dict):
        raise RuntimeError(f"{task} returned {result!r}")
    return elapsed
