"""A TCP proxy in front of redis-server that kills its worker the moment a fetch succeeds.

It sits between one worker and Redis. When Redis answers the worker's fetch command
(`BRPOP` for stock kombu, `EVALSHA` for kc-worker's atomic fetch) with a message, and
the proxy is armed for that fetch, it kill -9s the worker before passing the reply on.
The message has then left the queue, and the worker never saw it: the exact window in
which stock kombu loses a message.
"""

from __future__ import annotations

import signal
import subprocess
import threading

from tests.faults.tcp_proxy import OnChunk, TcpProxy

FETCH_COMMANDS = (b"BRPOP", b"EVALSHA")
MESSAGE_MARK = b'"delivery_tag"'


def command_name(chunk: bytes) -> bytes | None:
    """The name of the RESP command a chunk starts with (`*N\\r\\n$len\\r\\nNAME\\r\\n...`)."""
    if not chunk.startswith(b"*"):
        return None
    parts = chunk.split(b"\r\n", 3)
    return parts[2].upper() if len(parts) > 2 else None


class FetchKiller(TcpProxy):
    """Kill `target` at its `at`-th successful fetch; the kills are counted."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.kills = 0
        self._target: subprocess.Popen[bytes] | None = None
        self._at = 0
        self._fetched = 0
        self._lock = threading.Lock()

    def arm(self, target: subprocess.Popen[bytes], at: int) -> None:
        """Kill `target` when the `at`-th fetch that carries a message comes back."""
        with self._lock:
            self._target, self._at, self._fetched = target, at, 0

    def _should_kill(self) -> subprocess.Popen[bytes] | None:
        with self._lock:
            if self._target is None:
                return None
            self._fetched += 1
            if self._fetched < self._at:
                return None
            target, self._target = self._target, None
            self.kills += 1
            return target

    def hooks(self) -> tuple[OnChunk | None, OnChunk | None]:
        last: list[bytes | None] = [None]  # the command this connection sent last

        async def note_command(chunk: bytes) -> bool:
            last[0] = command_name(chunk) or last[0]
            return True

        async def kill_at_fetch(chunk: bytes) -> bool:
            if last[0] in FETCH_COMMANDS and MESSAGE_MARK in chunk:
                target = self._should_kill()
                if target is not None:
                    target.send_signal(signal.SIGKILL)
                    return False  # the reply never reaches the worker
            return True

        return note_command, kill_at_fetch
