"""A TCP proxy on 127.0.0.1, run in a thread: the base of the fault tier's proxies.

Subclasses decide what happens to the bytes of each connection in `hooks`; this class
starts and stops the server and closes every socket it opened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Self

from tests.support.processes import free_port


class TcpProxy:
    """Listens on `port` and connects each client to `upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Where an HTTP client reaches the upstream through this proxy."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread and self._thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        stopped = self._stopped = asyncio.Event()

        async def main() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            ready.set()
            await stopped.wait()
            server.close()
            # Connections still held or piping: cancel them and let each close its sockets.
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        loop.run_until_complete(main())
        loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return
        try:
            await self.relay(client_r, client_w, up_r, up_w)
        finally:
            up_w.close()
            client_w.close()

    async def relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        """Copy both directions, through the connection's hooks (see `hooks`)."""
        on_request, on_reply = self.hooks()
        await asyncio.gather(pipe(client_r, up_w, on_request), pipe(up_r, client_w, on_reply))

    def hooks(self) -> tuple[OnChunk | None, OnChunk | None]:
        """For one new connection: what sees each chunk going up, and each coming back.

        None copies as is; subclasses hold, count or cut.
        """
        return None, None


OnChunk = Callable[[bytes], Awaitable[bool]]


async def pipe(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, on_chunk: OnChunk | None = None
) -> None:
    """Copy one direction until it closes; `on_chunk` may hold a chunk, or cut (False)."""
    try:
        while chunk := await src.read(65536):
            if on_chunk is not None and not await on_chunk(chunk):
                return
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.close()
