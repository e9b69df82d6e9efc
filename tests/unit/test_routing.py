"""Choosing a server: least loaded, within its window, skipping servers that are down."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from worker.llm.limits import AdaptiveLimit
from worker.llm.routing import Endpoint, ServerPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def endpoint(url: str, capacity: int) -> Endpoint:
    stub: Any = None  # the pool never touches the HTTP clients
    return Endpoint(url=url, http=stub, sdk=stub, limit=AdaptiveLimit(capacity))


def make_pool(
    *capacities: int, healthy: set[str] | None = None
) -> tuple[ServerPool, list[Endpoint], Clock, list[str]]:
    endpoints = [endpoint(f"http://s{i}", c) for i, c in enumerate(capacities)]
    probed: list[str] = []
    clock = Clock()

    def probe(ep: Endpoint) -> bool:
        probed.append(ep.url)
        return healthy is not None and ep.url in healthy

    pool = ServerPool(endpoints, probe=probe, probe_interval=2.0, clock=clock)
    return pool, endpoints, clock, probed


def test_requests_go_to_the_least_loaded_server_relative_to_its_window() -> None:
    pool, (a, b), _, _ = make_pool(2, 6)
    chosen = [pool.acquire() for _ in range(8)]
    assert chosen.count(a) == 2
    assert chosen.count(b) == 6
    assert (a.in_flight, b.in_flight) == (2, 6)


def test_a_full_pool_waits_until_a_request_ends() -> None:
    pool, (a,), _, _ = make_pool(1)
    first = pool.acquire()
    got: list[Endpoint | None] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got
    assert first is not None
    pool.release(first, "ok")
    waiter.join(2)
    assert got == [a]


def test_unlimited_requests_do_not_wait_for_the_window() -> None:
    pool, (a,), _, _ = make_pool(1)
    assert pool.acquire() is a
    assert pool.acquire(limited=False) is a
    assert a.in_flight == 2


def test_a_down_server_is_skipped_until_health_answers() -> None:
    pool, (a, b), clock, probed = make_pool(4, 4)
    first = pool.acquire()
    assert first is a
    pool.release(a, "down", "refused")
    assert a.down and a.info is None
    assert [pool.acquire() for _ in range(3)] == [b, b, b]
    assert probed == []  # not probed before its interval

    clock.now += 2.5
    pool.acquire()
    assert probed == ["http://s0"]  # probed once, still down (health says no)
    assert a.down

    pool._probe = lambda ep: True  # type: ignore[method-assign]
    clock.now += 2.5
    assert pool.acquire() is a
    assert not a.down


def test_when_every_server_is_down_one_is_tried_anyway() -> None:
    pool, (a, b), clock, _ = make_pool(1, 1)
    pool.mark_down(a, "refused")
    clock.now += 1
    pool.mark_down(b, "refused")
    assert pool.acquire() is a  # the one marked down first
    assert not pool.has_alternative([])


def test_excluded_servers_are_not_chosen_again() -> None:
    pool, (a, b), _, _ = make_pool(1, 1)
    assert pool.acquire(exclude=[a]) is b
    assert pool.has_alternative([b])
    assert pool.acquire(exclude=[a, b]) is None


@pytest.mark.parametrize(("outcome", "limit"), [("ok", 8), ("overload", 4), ("neutral", 8)])
def test_release_feeds_the_window(outcome: Any, limit: int) -> None:
    pool, (a,), _, _ = make_pool(8)
    pool.release(pool.acquire() or a, outcome)
    assert a.limit.limit == limit
    assert a.in_flight == 0


def test_a_pool_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        ServerPool([], probe=lambda ep: True, probe_interval=1.0)
