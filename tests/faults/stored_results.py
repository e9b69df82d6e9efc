"""Count every result the workers store, from the channel Celery publishes each one on.

Celery's Redis backend writes a job's state with SET and PUBLISH on the same key in one
transaction (`celery-task-meta-<id>`). Subscribed to that pattern, this watcher sees
every final state written, even by a worker killed before it could log it, so a result
written twice is counted twice. It reconnects by itself when Redis restarts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import redis

PREFIX = "celery-task-meta-"
READY = {"SUCCESS", "FAILURE"}


class StoredResults:
    """A thread subscribed to every job's result channel on one redis-server."""

    def __init__(self, port: int, password: str) -> None:
        self.port = port
        self.password = password
        self._writes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, timeout: float = 10) -> StoredResults:
        self._thread.start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"could not subscribe to Redis on port {self.port}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def writes(self) -> Counter[str]:
        """How many final results were stored for each job id."""
        with self._lock:
            return Counter(self._writes)

    def _run(self) -> None:
        while not self._stop.is_set():
            client = redis.Redis(port=self.port, password=self.password, socket_timeout=5)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{PREFIX}*")
                self._subscribed.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and message["type"] == "pmessage":
                        self._count(message["channel"], message["data"])
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.05)  # Redis is restarting: subscribe again as soon as it is up
            finally:
                client.close()

    def _count(self, channel: bytes, data: bytes) -> None:
        try:
            status = json.loads(data).get("status")
        except ValueError:
            return
        if status in READY:
            with self._lock:
                self._writes[channel.decode()[len(PREFIX) :]] += 1
