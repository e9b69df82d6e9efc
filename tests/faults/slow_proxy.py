"""A TCP proxy in front of a real LLM server that holds chosen requests before passing them on.

It makes a server slow on demand: each request whose first line matches `slow_path`
waits `delay_s(n)` seconds before it is forwarded, where n counts those requests.
Other requests (health, props, models) pass at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.faults.tcp_proxy import OnChunk, TcpProxy


class SlowProxy(TcpProxy):
    def __init__(
        self,
        upstream_port: int,
        delay_s: Callable[[int], float],
        slow_path: bytes = b"POST /v1/chat/completions",
    ) -> None:
        super().__init__(upstream_port)
        self.delay_s = delay_s
        self.slow_path = slow_path
        self.held = 0

    def hooks(self) -> tuple[OnChunk | None, OnChunk | None]:
        return self._hold, None

    async def _hold(self, chunk: bytes) -> bool:
        """A chunk that starts a slow request waits before it is passed on."""
        if chunk.startswith(self.slow_path):
            self.held += 1
            await asyncio.sleep(self.delay_s(self.held))
        return True
