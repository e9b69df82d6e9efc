"""Batch state in Redis, shared by `kcw serve` processes and the workers.

    kcw:batch:<id>            hash: `status` and `json` (the whole Batch object)
    kcw:batch:index           sorted set of every batch id by creation time (for listing)
    kcw:batch:active          set of the ids of batches that are not finished
    kcw:batch:<id>:lock       which `kcw serve` feeds the batch (a token with a TTL)
    kcw:batch:<id>:sent       line -> when it was last sent, for lines queued or running
    kcw:batch:<id>:results    line -> outcome, written once (by a script) by the worker
    kcw:batch:<id>:done       bitmap of the lines already in the output or error file
    kcw:batch:<id>:closed     set while the batch is being finalized: no outcome is stored
    kcw:batch:wake            channel: a batch id, published when a line's outcome is stored

`sent` and `results` hold at most the window's lines; the files are the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis

from worker.batches.records import BatchRecord
from worker.errors import NotFound

__all__ = ["PREFIX", "WAKE_CHANNEL", "BatchStore"]

PREFIX = "kcw:batch:"
# Told of every stored outcome, so the feeder refills a freed slot at once, not on its tick.
WAKE_CHANNEL = f"{PREFIX}wake"
INDEX = f"{PREFIX}index"
ACTIVE_SET = f"{PREFIX}active"
# A results hash left behind (a late outcome after the batch ended) expires on its own.
RESULTS_TTL_S = 7 * 24 * 3600

# A worker stores a line's outcome only while the batch still wants it, and only once.
RECORD_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'in_progress' and status ~= 'cancelling' then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('GETBIT', KEYS[2], ARGV[1]) == 1 then return 0 end
local stored = redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if stored == 1 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return stored
"""
RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _key(batch_id: str, part: str = "") -> str:
    return f"{PREFIX}{batch_id}{':' + part if part else ''}"


class BatchStore:
    """Reads and writes batch state; every update of a Batch object is a checked transaction."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py's reply types are unions of every possible reply; ours are known per command.
        self.redis: Any = client
        self._record = client.register_script(RECORD_SCRIPT)
        self._renew = client.register_script(RENEW_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    # ---- Batch objects -------------------------------------------------------------------
    def create(self, record: BatchRecord) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(_key(record.id), mapping={"status": record.status, "json": record.to_json()})
        pipe.zadd(INDEX, {record.id: record.created_at + time.time() % 1})
        pipe.sadd(ACTIVE_SET, record.id)
        pipe.execute()

    def get(self, batch_id: str) -> BatchRecord:
        text = self.redis.hget(_key(batch_id), "json")
        if text is None:
            raise NotFound(
                f"No batch with id {batch_id!r}; `GET /v1/batches` lists the batches there are.",
                "batch_id",
            )
        return BatchRecord.from_json(text)

    def status(self, batch_id: str) -> str | None:
        value = self.redis.hget(_key(batch_id), "status")
        return value.decode() if isinstance(value, bytes) else None

    def update(
        self, batch_id: str, change: Callable[[BatchRecord], BatchRecord | None]
    ) -> BatchRecord:
        """Apply `change` to the stored batch atomically; it returns None to leave it as is."""
        key = _key(batch_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    text = pipe.hget(key, "json")
                    if text is None:
                        raise NotFound(f"No batch with id {batch_id!r}.", "batch_id")
                    current = BatchRecord.from_json(text)
                    changed = change(current.model_copy(deep=True))
                    if changed is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.hset(key, mapping={"status": changed.status, "json": changed.to_json()})
                    if changed.status not in (
                        "validating",
                        "in_progress",
                        "finalizing",
                        "cancelling",
                    ):
                        pipe.srem(ACTIVE_SET, batch_id)
                    pipe.execute()
                    return changed
                except redis.WatchError:
                    continue

    def page(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Batches newest first, starting after the batch `after`; and whether more follow."""
        start = 0
        if after:
            rank = self.redis.zrevrank(INDEX, after)
            if rank is None:
                raise NotFound(f"No batch with id {after!r} to list after.", "after")
            start = int(rank) + 1
        ids = self.redis.zrevrange(INDEX, start, start + limit)
        records = []
        for raw in ids[:limit]:
            text = self.redis.hget(_key(raw.decode()), "json")
            if text is not None:
                records.append(BatchRecord.from_json(text))
        return records, len(ids) > limit

    def active_ids(self) -> list[str]:
        return sorted(raw.decode() for raw in self.redis.smembers(ACTIVE_SET))

    def active_records(self) -> list[BatchRecord]:
        """The unfinished batches; one deleted meanwhile is left out."""
        records = []
        for batch_id in self.active_ids():
            try:
                records.append(self.get(batch_id))
            except NotFound:
                continue
        return records

    # ---- Which `kcw serve` feeds a batch -------------------------------------------------
    def acquire(self, batch_id: str, token: str, ttl_ms: int) -> bool:
        return bool(self.redis.set(_key(batch_id, "lock"), token, nx=True, px=ttl_ms))

    def renew(self, batch_id: str, token: str, ttl_ms: int) -> bool:
        return bool(self._renew(keys=[_key(batch_id, "lock")], args=[token, ttl_ms]))

    def release(self, batch_id: str, token: str) -> None:
        self._release(keys=[_key(batch_id, "lock")], args=[token])

    # ---- Lines ---------------------------------------------------------------------------
    def mark_sent(self, batch_id: str, sent: dict[int, float]) -> None:
        if sent:
            self.redis.hset(_key(batch_id, "sent"), mapping={str(k): v for k, v in sent.items()})

    def sent(self, batch_id: str) -> dict[int, float]:
        raw = self.redis.hgetall(_key(batch_id, "sent"))
        return {int(k): float(v) for k, v in raw.items()}

    def record(self, batch_id: str, line: int, outcome: dict[str, Any]) -> bool:
        """Store a line's outcome once, while the batch wants it (the worker's side)."""
        keys = [
            _key(batch_id),
            _key(batch_id, "done"),
            _key(batch_id, "results"),
            _key(batch_id, "closed"),
        ]
        args: list[str | int] = [line, json.dumps(outcome), RESULTS_TTL_S, WAKE_CHANNEL, batch_id]
        return bool(self._record(keys=keys, args=args))

    def is_done(self, batch_id: str, line: int) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.getbit(_key(batch_id, "done"), line)
        pipe.hexists(_key(batch_id, "results"), str(line))
        bit, stored = pipe.execute()
        return bool(bit) or bool(stored)

    def results(self, batch_id: str) -> dict[int, dict[str, Any]]:
        raw = self.redis.hgetall(_key(batch_id, "results"))
        return {int(k): json.loads(v) for k, v in raw.items()}

    def settle(self, batch_id: str, done: list[int], resolved: list[int]) -> None:
        """Lines now in the files (`done`) and lines no longer outstanding leave Redis."""
        if not done and not resolved:
            return
        pipe = self.redis.pipeline()
        for line in done:
            pipe.setbit(_key(batch_id, "done"), line, 1)
        fields = [str(line) for line in {*done, *resolved}]
        pipe.hdel(_key(batch_id, "results"), *fields)
        pipe.hdel(_key(batch_id, "sent"), *fields)
        pipe.execute()

    def mark_done(self, batch_id: str, lines: list[int]) -> None:
        """Set the done bits of lines found in the files (after a restart)."""
        pipe = self.redis.pipeline(transaction=False)
        for line in lines:
            pipe.setbit(_key(batch_id, "done"), line, 1)
        pipe.execute()

    def close(self, batch_id: str) -> None:
        """Stop storing outcomes: what is in `results` now is the last of them."""
        self.redis.set(_key(batch_id, "closed"), 1, ex=RESULTS_TTL_S)

    def forget_lines(self, batch_id: str) -> None:
        """Drop the per-line keys of a finished batch."""
        parts = ("sent", "results", "done", "closed")
        self.redis.delete(*(_key(batch_id, part) for part in parts))
