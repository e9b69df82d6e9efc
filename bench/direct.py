"""Phase (a): requests straight to the server from an asyncio client, a bounded number in
flight over a warm connection pool. The best concurrency is the server's limit."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.phase import Completion

__all__ = ["direct", "served_model", "steady", "timed_request"]

JSON = dict[str, Any]


def served_model(url: str) -> str:
    """The model id the server lists first."""
    data = httpx.get(f"{url}/v1/models", timeout=30).json()
    return str(data["data"][0]["id"])


def timed_request(client: httpx.Client, model: str, body: JSON) -> float:
    """Seconds for one chat request straight to the server `client` is bound to."""
    started = time.perf_counter()
    client.post("/v1/chat/completions", json={**body, "model": model}).raise_for_status()
    return time.perf_counter() - started


def _pool(
    url: str, concurrency: int, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An async client with a connection for each of `concurrency` requests in flight."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, timeout=3600, limits=limits, transport=transport)


async def _post(client: httpx.AsyncClient, model: str, body: JSON) -> httpx.Response:
    """One chat request; an error status raises."""
    response = await client.post("/v1/chat/completions", json={**body, "model": model})
    response.raise_for_status()
    return response


async def _direct(url: str, model: str, bodies: list[JSON], concurrency: int) -> list[Completion]:
    async with _pool(url, concurrency) as client:

        async def one(body: JSON) -> Completion:
            started = time.time()
            response = await _post(client, model, body)
            usage = response.json()["usage"]
            return Completion(started, time.time(), int(usage["completion_tokens"]))

        # Open every connection first, so the measured phase starts on a warm pool.
        warm = {**bodies[0], "messages": [{"role": "user", "content": "warm-up"}], "max_tokens": 1}
        await asyncio.gather(*(one(warm) for _ in range(concurrency)))
        gate = asyncio.Semaphore(concurrency)

        async def bounded(body: JSON) -> Completion:
            async with gate:
                return await one(body)

        return list(await asyncio.gather(*(bounded(b) for b in bodies)))


def direct(url: str, bodies: list[JSON], concurrency: int) -> list[Completion]:
    """Send every body with at most `concurrency` in flight; one completion per body."""
    return asyncio.run(_direct(url, served_model(url), bodies, concurrency))


async def _steady(
    url: str,
    model: str,
    make_body: Callable[[], JSON],
    concurrency: int,
    halt: threading.Event,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """`concurrency` lanes, each sending its next request the moment its last one ends,
    until `halt` is set; returns how many requests completed."""
    async with _pool(url, concurrency, transport) as client:

        async def lane() -> int:
            done = 0
            while not halt.is_set():
                await _post(client, model, make_body())
                done += 1
            return done

        return sum(await asyncio.gather(*(lane() for _ in range(concurrency))))


def steady(url: str, make_body: Callable[[], JSON], concurrency: int, halt: threading.Event) -> int:
    """A load that keeps `concurrency` requests in flight without a gap until `halt` is set
    (a new body from `make_body` for each); returns how many requests completed."""
    return asyncio.run(_steady(url, served_model(url), make_body, concurrency, halt))
