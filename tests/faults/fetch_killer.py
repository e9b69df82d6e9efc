"""A TCP proxy in front of redis-server that kills its worker the moment a fetch succeeds.

It sits between one worker and Redis. When Redis answers the worker's fetch command
(`BRPOP` for stock kombu, `EVALSHA` for kc-worker's atomic fetch) with a message, and
the proxy is armed for that fetch, it kill -9s the worker before passing the reply on.
The message has then left the queue, and the worker never saw it: the exact window in
which stock kombu loses a message.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from tests.support.processes import free_port

FETCH_COMMANDS = (b"BRPOP", b"EVALSHA")
MESSAGE_MARK = b'"delivery_tag"'


def command_name(chunk: bytes) -> bytes | None:
    """The name of the RESP command a chunk starts with (`*N\\r\\n$len\\r\\nNAME\\r\\n...`)."""
    if not chunk.startswith(b"*"):
        return None
    parts = chunk.split(b"\r\n", 3)
    return parts[2].upper() if len(parts) > 2 else None


@dataclass
class FetchKiller:
    """Kill `target` at its `at`-th successful fetch; the count and kills are kept."""

    upstream_port: int
    port: int = field(default_factory=free_port)
    kills: int = 0
    _target: subprocess.Popen[bytes] | None = None
    _at: int = 0
    _fetched: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stopped: asyncio.Event = field(init=False)

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

    def start(self) -> FetchKiller:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        self._stopped = asyncio.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            ready.set()
            await self._stopped.wait()
            server.close()
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        loop.run_until_complete(main())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        last: list[bytes | None] = [None]  # the command this connection sent last
        try:
            await asyncio.gather(
                self._requests(client_r, up_w, last), self._replies(up_r, client_w, last)
            )
        finally:
            up_w.close()
            client_w.close()

    async def _requests(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, last: list[bytes | None]
    ) -> None:
        try:
            while chunk := await src.read(65536):
                last[0] = command_name(chunk) or last[0]
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def _replies(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, last: list[bytes | None]
    ) -> None:
        try:
            while chunk := await src.read(65536):
                if last[0] in FETCH_COMMANDS and MESSAGE_MARK in chunk:
                    target = self._should_kill()
                    if target is not None:
                        target.send_signal(signal.SIGKILL)
                        return  # the reply never reaches the worker
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
