"""Count what happened to every job of a fault scenario, from Redis, the LLM traffic and logs.

completed: a SUCCESS result is stored. failed clearly: a FAILURE result whose error is
one of kc-worker's errors, with a message. lost: no final result when the scenario
ends. duplicated: a job whose final result was written more than once, seen on the channel
Celery publishes every stored state on (`StoredResults`); a worker's "succeeded" log line
is not a write, since Celery keeps a SUCCESS result rather than overwrite it. executed
more than once: a job that called the LLM server from more than one run
(`CountingProxy`), whether or not it stored a second result; a request retried inside one
run does not count.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.faults.counting_proxy import CountingProxy
from tests.faults.report import Row
from tests.faults.stored_results import StoredResults
from worker import errors
from worker.client import JobClient

RECEIVED = re.compile(r"Task kcw\.\w+\[([0-9a-f-]{36})\] received")
SUCCEEDED = re.compile(r"Task kcw\.\w+\[([0-9a-f-]{36})\] succeeded in")
RETRY = re.compile(r"Task kcw\.\w+\[([0-9a-f-]{36})\] retry:")
READY = {"SUCCESS", "FAILURE"}


def chat(n: int, max_tokens: int = 32) -> dict[str, Any]:
    """A short chat job; `n` makes each prompt different."""
    return {
        "messages": [{"role": "user", "content": f"Count from {n} to {n + 5}, then stop."}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }


@dataclass
class Ledger:
    """The jobs one scenario submitted, and where their results and logs are."""

    app: Any
    redis_client: redis.Redis
    calls: CountingProxy
    stored: StoredResults
    ids: list[str] = field(default_factory=list)
    _final: dict[str, dict[str, Any]] = field(default_factory=dict)

    def submit(self, kind: str, payload: dict[str, Any]) -> str:
        job_id = JobClient(app=self.app).submit(kind, payload).id
        self.ids.append(job_id)
        return job_id

    def metas(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Each job's stored meta (status, result); final ones are kept unless `fresh`."""
        if fresh:
            self._final.clear()
        pending = [i for i in self.ids if i not in self._final]
        found: dict[str, dict[str, Any]] = {}
        try:
            for start in range(0, len(pending), 1000):
                batch = pending[start : start + 1000]
                raw = self.redis_client.mget([f"celery-task-meta-{i}" for i in batch])
                found.update({i: json.loads(v) for i, v in zip(batch, raw, strict=True) if v})
        except redis.RedisError:
            pass  # Redis is restarting: what is known so far
        self._final.update({i: m for i, m in found.items() if m["status"] in READY})
        return {**found, **self._final}

    def finished(self) -> int:
        return sum(meta["status"] in READY for meta in self.metas().values())

    def wait(self, timeout: float, idle: float | None = None) -> float:
        """Wait until every job is finished, for `timeout` s at most, or `idle` s without news.

        Returns the seconds waited.
        """
        started = time.monotonic()
        last, last_change = -1, started
        while time.monotonic() - started < timeout:
            done = self.finished()
            if done == len(self.ids):
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif idle is not None and time.monotonic() - last_change > idle:
                break
            time.sleep(1.0)
        return time.monotonic() - started

    def lost_ids(self) -> set[str]:
        """The jobs with no final result stored now (a result Redis lost counts as lost)."""
        metas = self.metas(fresh=True)
        return {i for i in self.ids if metas.get(i, {}).get("status") not in READY}

    def row(self, scenario: str, logs: list[Path], note: str = "", **extra: Any) -> Row:
        metas = self.metas(fresh=True)  # a result Redis lost after it was seen counts as lost
        completed = sum(meta["status"] == "SUCCESS" for meta in metas.values())
        clear = sum(
            meta["status"] == "FAILURE" and _is_clear(meta["result"]) for meta in metas.values()
        )
        ours = set(self.ids)
        text = "\n".join(path.read_text(errors="replace") for path in logs)
        stored = self.stored.writes()
        writes = {i: stored[i] for i in ours}
        calls = self.calls.calls()
        mine = [calls[i] for i in ours if i in calls]
        received = Counter(i for i in RECEIVED.findall(text) if i in ours)
        retries = Counter(i for i in RETRY.findall(text) if i in ours)
        return Row(
            scenario=scenario,
            submitted=len(self.ids),
            completed=completed,
            failed_clearly=clear,
            lost=len(self.ids) - sum(meta["status"] in READY for meta in metas.values()),
            duplicated=sum(1 for count in writes.values() if count > 1),
            executed_more_than_once=sum(c.executions > 1 for c in mine),
            llm_requests=sum(c.requests for c in mine),
            note=note,
            extra={
                "results stored": sum(writes.values()),
                "retried": len(retries),
                # Received again without a retry: a dead worker's job handed out once more.
                "redelivered": sum(received[i] > 1 + retries[i] for i in received),
                # Lost before any worker logged it as received (see the kill test).
                "lost never received": sum(
                    i not in received and metas.get(i, {}).get("status") not in READY
                    for i in self.ids
                ),
                **extra,
            },
        )

    def errors(self) -> Counter[str]:
        """How many jobs failed with each error class."""
        return Counter(
            str(meta["result"].get("exc_type"))
            for meta in self.metas().values()
            if meta["status"] == "FAILURE"
        )

    def messages(self) -> list[str]:
        return [
            " ".join(str(part) for part in meta["result"].get("exc_message") or [])
            for meta in self.metas().values()
            if meta["status"] == "FAILURE"
        ]


def _is_clear(result: Any) -> bool:
    """A failure is clear when it is one of our errors and says what to fix."""
    if not isinstance(result, dict):
        return False
    message = " ".join(str(part) for part in result.get("exc_message") or [])
    return result.get("exc_type") in errors.__all__ and len(message) > 20


@dataclass(frozen=True)
class Snapshot:
    """Where each job is at one moment: waiting in the queue, delivered, or finished."""

    queued: frozenset[str]
    unacked: frozenset[str]
    done: frozenset[str]


def snapshot(ledger: Ledger) -> Snapshot:
    """Read the queue, the unacknowledged set and the results (take it with workers frozen)."""
    client = ledger.redis_client
    queued = {json.loads(raw)["headers"]["id"] for raw in client.lrange("kcw", 0, -1)}
    # kombu's unacked entries: [message, exchange, routing key].
    unacked = {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}
    done = {i for i, meta in ledger.metas(fresh=True).items() if meta["status"] in READY}
    return Snapshot(frozenset(queued), frozenset(unacked), frozenset(done))


def queue_is_empty(client: redis.Redis) -> bool:
    """Nothing waits in the queue and nothing is delivered but unacknowledged."""
    return client.llen("kcw") == 0 and client.hlen("unacked") == 0
