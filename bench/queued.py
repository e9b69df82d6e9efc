"""Phases through Redis: (b) our pipeline and (c) naive prefork Celery, plus the client-side
latency of single jobs.

Jobs are sent with `send_task` and their results read from the result backend by the
client, so every time is taken at the client, as for (a).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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

__all__ = [
    "celery_worker",
    "client_app",
    "pool_size",
    "rotated",
    "run_jobs",
    "single_latency",
]

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[1]
READY = {"SUCCESS", "FAILURE", "REVOKED"}
RESULT_PREFIX = "celery-task-meta-"
SWEEP_S = 0.5  # how often the sender checks that every job is done


def client_app(server: RedisServer, db: int = 0) -> Celery:
    """A submitting app on the bench's Redis, configured like the workers (not from .env)."""
    app: Celery = make_app(server.worker_settings(db), main="kcw-bench")
    return app


@contextmanager
def celery_worker(
    tmp: Path,
    env: dict[str, str],
    app: Celery,
    name: str,
    module: str,
    *extra: str,
    code: Path = ROOT,
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A <module> worker --loglevel=warning [extra]`, stopped on exit; it imports
    the project from `code` (a checkout of another commit, to compare two versions)."""
    log = tmp / f"worker-{name}.log"
    argv = worker_argv(
        app=module, loglevel="warning", hostname=f"{name}@%h", quiet=True, extra=extra
    )
    full_env = {**env, "PYTHONPATH": os.pathsep.join([str(code), env.get("PYTHONPATH", "")])}
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


class _Arrivals:
    """A thread subscribed to every result channel, noting when each final state arrives.

    It runs while the jobs are being sent, so a result that lands during the sending is
    timed when it lands, not when the sender gets round to reading it.
    """

    def __init__(self, rds: redis.Redis) -> None:
        # Typed through a Callable: redis-py types `pubsub` in some releases and not others.
        open_pubsub: Callable[..., Any] = rds.pubsub
        self.pubsub = open_pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{RESULT_PREFIX}*")
        self.seen: dict[str, tuple[JSON, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.5)
            if message is None or message["type"] != "pmessage":
                continue
            now = time.time()
            meta = json.loads(message["data"])
            if _outcome(meta) is not None:
                task_id = message["channel"].decode()[len(RESULT_PREFIX) :]
                with self._lock:
                    self.seen.setdefault(task_id, (meta, now))

    def take(self) -> dict[str, tuple[JSON, float]]:
        with self._lock:
            return dict(self.seen)

    def add(self, task_id: str, meta: JSON, at: float) -> None:
        with self._lock:
            self.seen.setdefault(task_id, (meta, at))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


def run_jobs(
    app: Celery, rds: redis.Redis, task: str, bodies: list[JSON], timeout: float = 3600
) -> list[Completion]:
    """Send every job at once; each result is timed when it is stored.

    Celery's Redis backend publishes every state on `celery-task-meta-<id>`; a thread
    subscribed to that pattern learns of a result when it lands, without polling (which
    would take CPU from the server under test). The stored keys are read every few seconds
    as well, in case a message was missed.
    """
    arrivals = _Arrivals(rds)
    client = JobClient(app=app)
    sent: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        for body in bodies:
            at = time.time()
            sent[client.send(task, body).id] = at
        while True:
            seen = arrivals.take()
            pending = [i for i in sent if i not in seen]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} {task} jobs still pending after {timeout}s")
            time.sleep(SWEEP_S)
            values = rds.mget([f"{RESULT_PREFIX}{i}" for i in pending])
            now = time.time()
            for task_id, raw in zip(pending, values, strict=True):
                meta = json.loads(raw) if raw else None
                if _outcome(meta) is not None and meta is not None:
                    arrivals.add(task_id, meta, now)
    finally:
        arrivals.close()
    done, failures = [], []
    for task_id, (meta, at) in arrivals.take().items():
        if task_id not in sent:
            continue
        ok, tokens = _outcome(meta) or (False, 0)
        if not ok:
            failures.append(meta.get("result"))
        done.append(Completion(sent[task_id], at, tokens, ok))
    if failures:
        print(f"  {task}: {len(failures)} jobs failed, e.g. {failures[0]}", flush=True)
    return done


def single_latency(app: Celery, task: str, body: JSON) -> float:
    """Seconds from `send_task` to the result read back by the client, one job alone."""
    client = JobClient(app=app)
    started = time.perf_counter()
    result = client.send(task, body).async_result.get(timeout=600)
    elapsed = time.perf_counter() - started
    if not isinstance(result, dict):
        raise RuntimeError(f"{task} returned {result!r}")
    return elapsed


def rotated(
    measures: Sequence[Callable[[JSON], float]], rounds: int, bodies: Sequence[JSON]
) -> list[list[float]]:
    """Each measure once per round, the order rotated one place a round so that none always
    goes first; one list of results per measure.

    Measure `arm` of round `i` gets `bodies[width * i + arm]` whatever its place in the
    round, so with `paired_bodies` the arms of a round do the same work.
    """
    out: list[list[float]] = [[] for _ in measures]
    width = len(measures)
    if len(bodies) < width * rounds:
        raise ValueError(f"{rounds} rounds of {width} measures need {width * rounds} bodies")
    for i in range(rounds):
        for k in range(width):
            arm = (i + k) % width
            out[arm].append(measures[arm](bodies[width * i + arm]))
    return out
