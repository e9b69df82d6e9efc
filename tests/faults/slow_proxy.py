"""A TCP proxy in front of a real LLM server that holds chosen requests before passing them on.

It makes a server slow on demand: each request whose first line matches `slow_path`
waits `delay_s(n)` seconds before it is forwarded, where n counts those requests.
Other requests (health, props, models) pass at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.processes import free_port


@dataclass
class SlowProxy:
    upstream_port: int
    delay_s: Callable[[int], float]
    slow_path: bytes = b"POST /v1/chat/completions"
    port: int = field(default_factory=free_port)
    held: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stopped: asyncio.Event = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowProxy:
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
            # Connections still held or piping: cancel them and let each close its sockets.
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
        try:
            await asyncio.gather(self._pipe(client_r, up_w, hold=True), self._pipe(up_r, client_w))
        finally:
            up_w.close()
            client_w.close()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: bool = False
    ) -> None:
        """Copy one direction; with `hold`, a chunk that starts a slow request waits first."""
        try:
            while chunk := await src.read(65536):
                if hold and chunk.startswith(self.slow_path):
                    self.held += 1
                    await asyncio.sleep(self.delay_s(self.held))
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()
