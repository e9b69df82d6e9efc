# kombu's Redis channel sets most of its attributes at run time, unseen by mypy.
# mypy: disable-error-code="attr-defined"
"""kombu's Redis transport with a fetch that cannot lose a message.

Stock kombu takes a message with `BRPOP` and records it in `unacked` in a later
round trip: a worker killed between the two loses the message, which is then in
neither place. Here one Lua script pops the message and records it in `unacked`
atomically, so at every instant a message is in its queue or in `unacked` (from
where kombu's visibility timeout returns it to the queue if its worker dies).

Waiting is separate from taking: when every queue is empty, the channel blocks on
`BLMOVE q q RIGHT RIGHT`, which moves the last element of `q` onto the end of
`q`: a no-op that returns as soon as `q` holds a message, without taking it. The
fetch script is sent right behind it on the same connection, so Redis runs it the
moment the wait ends and both replies come back together. A message costs one round
trip, idle or under load (stock kombu needs two). Needs Redis 7.0 or newer (`BLMOVE`,
script flags).

Select it with Celery's `broker_transport` (see `worker.broker`); submitters may
use it too, since publishing is unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any, cast

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

__all__ = ["FETCH_SCRIPT", "Channel", "QoS", "Transport"]

log = logging.getLogger("kcw.worker")
# Seconds before asking again a Redis that refused the fetch script with an error.
REFUSED_PAUSE_S = 1.0

# KEYS: the unacked hash, the unacked index, then the queue keys in priority order.
# ARGV: the score for the index (the client's clock, as kombu's restore sweep uses).
# Returns {queue key, message, 1 if recorded in unacked} for the first non-empty queue, or nil.
# The shebang makes Redis refuse the whole script when out of memory, before it pops anything;
# nothing after the pop can fail (a message cjson cannot read is recorded from its raw text,
# or, failing that, handed out unrecorded for the worker to record, as stock kombu does).
FETCH_SCRIPT = r"""#!lua
local function fields(item)
    local ok, message = pcall(cjson.decode, item)
    if ok and type(message) == 'table' and type(message['properties']) == 'table' then
        local properties = message['properties']
        local info = properties['delivery_info']
        local tag = properties['delivery_tag']
        if type(tag) == 'string' and type(info) == 'table' then
            return tag, cjson.encode(info['exchange']), cjson.encode(info['routing_key'])
        end
        return nil
    end
    local tag = string.match(item, '"delivery_tag": *"([^"\\]+)"')
    local exchange = string.match(item, '"exchange": *("[^"\\]*")')
    local routing_key = string.match(item, '"routing_key": *("[^"\\]*")')
    if tag and exchange and routing_key then
        return tag, exchange, routing_key
    end
    return nil
end

for i = 3, #KEYS do
    local item = redis.call('RPOP', KEYS[i])
    if item then
        local tag, exchange, routing_key = fields(item)
        if not tag then
            return {KEYS[i], item, 0}
        end
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        local entry = '[' .. item .. ',' .. exchange .. ',' .. routing_key .. ']'
        redis.call('HSET', KEYS[1], tag, entry)
        return {KEYS[i], item, 1}
    end
end
return nil
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, minus the `unacked` write for messages the fetch script recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        channel = cast(Channel, self.channel)
        if delivery_tag in channel.recorded_tags:
            channel.recorded_tags.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # in memory only
        else:
            super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    """A Redis channel whose consumer takes messages with one atomic script."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Delivery tags already in `unacked`, between the fetch and QoS.append.
        self.recorded_tags: set[str] = set()
        self._fetch_sha: str | None = None
        # True while a BLMOVE wait, not a fetch, is the command in flight.
        self._waiting = False
        self._resume_at = 0.0
        self._shared: tuple[Any, Any] | None = None  # (pool, client) of conn_or_acquire

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """A Redis client for a publish or an ack: one per connection pool, not one per call.

        kombu builds a new redis-py client (and its table of reply callbacks) each time,
        which is a large share of the CPU a small job costs. A redis-py client is safe to
        share between threads; it is rebuilt when kombu replaces the pool.
        """
        if client is not None or self._closed():
            with super().conn_or_acquire(client) as own:
                yield own
            return
        pool = self.pool
        if self._shared is None or self._shared[0] is not pool:
            self._shared = (pool, self._create_client())
        yield self._shared[1]

    def _closed(self) -> bool:
        """True once the broker connection was closed under this channel."""
        return self.connection is None or self.connection.client is None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self._closed():
            # The broker connection was closed under this channel (Redis went away while
            # jobs ran), or the channel itself was (kombu then sets its `connection` to
            # None). Restoring or acknowledging on it then needs a new Redis client, and
            # kombu would fail with an AttributeError that stops the worker. A connection
            # error instead is one Celery recovers from: it reconnects, and the messages
            # stay in `unacked` for the visibility timeout to bring back.
            raise RedisConnectionError("the connection to Redis was closed; reconnecting")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params

    def _key(self, name: str) -> str:
        return f"{self.global_keyprefix}{name}" if self.global_keyprefix else name

    def _fetch_keys(self) -> list[str]:
        queues = self._queue_cycle.consume(len(self.active_queues))
        return [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]

    def _fetch_command(self, keys: list[str]) -> tuple[Any, ...]:
        """The EVALSHA that takes the first message of `keys` and records it in `unacked`."""
        if self._fetch_sha is None:
            # On a pooled connection: this channel's own one may not carry other replies.
            with self.conn_or_acquire() as client:
                self._fetch_sha = bytes_to_str(client.script_load(FETCH_SCRIPT))
        all_keys = [self.unacked_key, self.unacked_index_key, *keys]
        return (
            "EVALSHA",
            self._fetch_sha,
            len(all_keys),
            *(self._key(k) for k in all_keys),
            repr(time.time()),
        )

    def _send(self, commands: list[tuple[Any, ...]], *, waiting: bool) -> None:
        """Send `commands` in one write on the polled connection, which now awaits them."""
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        self._waiting = waiting
        connection.send_packed_command(connection.pack_commands(commands))

    def _send_fetch(self) -> None:
        keys = self._fetch_keys()
        if keys:
            self._send([self._fetch_command(keys)], waiting=False)

    def _send_wait(self, timeout: float | None = None) -> None:
        """Block until the first queue holds a message, then take it: the wait and the
        fetch go out together, and Redis runs the fetch as soon as the wait returns."""
        keys = self._fetch_keys()
        if not keys:
            return
        # The fetch's `unacked_index` score is this clock, up to one wait (brpop_timeout,
        # 1 s) before the job is taken: against the visibility timeout (over half an hour by
        # default) a second at most.
        fetch = self._fetch_command(keys)
        wait = timeout if timeout is not None else self.brpop_timeout
        block = ("BLMOVE", self._key(keys[0]), self._key(keys[0]), "RIGHT", "RIGHT", wait or 0)
        self._send([block, fetch], waiting=True)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if time.monotonic() >= self._resume_at:
            self._send_fetch()

    def _brpop_read(self, **options: Any) -> bool:
        waited = self._waiting
        try:
            if waited:
                # The wait's own reply says nothing: the fetch behind it has the message.
                self._read_wait_reply(**options)
            reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        except self.ResponseError as exc:
            # Never fatal for the worker: a Redis that forgot the script (restarted, or
            # SCRIPT FLUSH) gets it again; one that refuses it (out of memory, say) is asked
            # again a moment later, while its jobs stay queued.
            if isinstance(exc, NoScriptError):
                self._fetch_sha = None
            else:
                log.warning("Redis refused to hand out a job (%s); trying again in 1 s", exc)
                self._resume_at = time.monotonic() + REFUSED_PAUSE_S
            raise Empty() from None
        finally:
            self._in_poll = None
            self._waiting = False
        if not reply:
            self._send_wait()
            raise Empty()
        key, item, recorded = bytes_to_str(reply[0]), bytes_to_str(reply[1]), int(reply[2])
        if self.global_keyprefix:
            key = key.removeprefix(self.global_keyprefix)
        queue = key.rsplit(self.sep, 1)[0]
        try:
            message = loads(item)
            tag = message["properties"]["delivery_tag"]
        except (ValueError, TypeError, KeyError):
            self._drop(item, recorded)
            raise Empty() from None
        if recorded:
            self.recorded_tags.add(tag)
        self._queue_cycle.rotate(queue)
        self.connection._deliver(message, queue)
        self._flush_brpop_reauth()
        return True

    def _read_wait_reply(self, **options: Any) -> None:
        """Read the BLMOVE's reply; an error there still leaves the fetch's reply to read."""
        try:
            self.client.parse_response(self.client.connection, "BLMOVE", **options)
        except self.ResponseError as exc:
            log.warning("Redis refused to wait for a job (%s)", exc)

    def _drop(self, item: str, recorded: int) -> None:
        """A message that is no kombu message can never run: say so, and forget it."""
        log.error("dropped a message from Redis that is not a task message: %.200r", item)
        if recorded:
            tag = item.split('"delivery_tag": "', 1)[-1].split('"', 1)[0]
            with self.conn_or_acquire() as client:
                client.pipeline().zrem(self.unacked_index_key, tag).hdel(
                    self.unacked_key, tag
                ).execute()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the atomic fetch (`broker_transport` in Celery)."""

    Channel = Channel
    driver_name = "redis"
