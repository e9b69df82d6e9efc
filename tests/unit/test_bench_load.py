"""bench.direct.steady: the background load keeps its requests in flight without a gap."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from bench.direct import _steady

JSON = dict[str, Any]
REPLY = {"choices": [{"message": {"content": "ok"}}], "usage": {"completion_tokens": 1}}


class HeldServer:
    """A transport whose requests wait until the test releases them, oldest first."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.held: list[asyncio.Future[None]] = []
        self.bodies: list[bytes] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        gate = asyncio.get_running_loop().create_future()
        self.held.append(gate)
        await gate
        return httpx.Response(self.status, json=REPLY)

    def release_one(self) -> None:
        self.held.pop(0).set_result(None)

    async def until_held(self, count: int) -> None:
        """Let the load run until `count` requests are held; fail if it never gets there."""
        for _ in range(1000):
            if len(self.held) == count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{len(self.held)} requests in flight, not {count}")


def bodies() -> Any:
    serial = iter(range(10_000))
    return lambda: {"messages": [{"role": "user", "content": f"p{next(serial)}"}]}


def test_a_finished_request_is_replaced_at_once_for_as_long_as_the_load_runs() -> None:
    async def scenario() -> tuple[int, HeldServer]:
        server, halt = HeldServer(), threading.Event()
        load = asyncio.create_task(
            _steady("http://llm", "m", bodies(), 3, halt, httpx.MockTransport(server.handle))
        )
        await server.until_held(3)
        # Far more than a round of 2x the concurrency: a load sent in rounds would drain.
        for _ in range(20):
            server.release_one()
            await server.until_held(3)
        halt.set()
        while server.held:
            server.release_one()
            await asyncio.sleep(0)
        return await load, server

    completed, server = asyncio.run(scenario())
    assert completed == 23
    assert len(server.bodies) == 23
    assert len(set(server.bodies)) == 23  # every prompt new: none rides the prompt cache


def test_a_failed_request_stops_the_load_with_the_error() -> None:
    async def scenario() -> None:
        server, halt = HeldServer(status=503), threading.Event()
        load = asyncio.create_task(
            _steady("http://llm", "m", bodies(), 2, halt, httpx.MockTransport(server.handle))
        )
        await server.until_held(2)
        server.release_one()
        await load

    with pytest.raises(httpx.HTTPStatusError, match="503"):
        asyncio.run(scenario())
