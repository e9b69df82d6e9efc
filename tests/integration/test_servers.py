"""Several real llama.cpp servers behind one worker: the load is shared, and a server that is
stopped mid-run loses no job. The stopped server gets work again once its /health says ok."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import (
    LLMServer,
    RedisServer,
    Worker,
    client_app,
    start_launcher,
    stop,
    wait_until,
)
from worker.broker import close_app

SMALL = {"N_PARALLEL": "2", "N_CTX": "1024"}


def chat(n: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"Count from {n} to {n + 5}."}],
        "max_tokens": 24,
        "temperature": 0,
    }


def served_by(results: list[Any]) -> Counter[str]:
    return Counter(str(r.result["model"]) for r in results)


@pytest.fixture()
def two_servers(tmp_root: Path) -> Any:
    servers = [
        start_launcher(tmp_root, MODEL_ALIAS="server-a", **SMALL),
        start_launcher(tmp_root, MODEL_ALIAS="server-b", **SMALL),
    ]
    yield servers
    for server in servers:
        server.stop()


def test_a_server_stopped_mid_run_loses_no_job_and_comes_back(
    tmp_root: Path,
    redis_server: RedisServer,
    two_servers: list[LLMServer],
    spawn_worker: Callable[..., tuple[Worker, Any]],
) -> None:
    a, b = two_servers
    worker, _ = spawn_worker(f"{a.url},{b.url}", WORKER_CONCURRENCY="0", LLM_HEALTH_INTERVAL="0.5")
    # Sized to the servers: 2 slots each.
    assert "concurrency sized to the LLM servers: 4 threads" in worker.output()
    app = client_app(redis_server, int(worker.env["REDIS_DB"]))
    try:
        results = [app.send_task("kcw.chat", args=[chat(i)]) for i in range(40)]
        wait_until(lambda: sum(r.ready() for r in results) >= 8, 120, "the first jobs")
        a.proc.send_signal(signal.SIGKILL)  # a crash, with requests in flight
        a.proc.wait(10)
        wait_until(lambda: all(r.ready() for r in results), 300, "every job")
        states = Counter(r.state for r in results)
        assert states == {"SUCCESS": 40}, [r.result for r in results if r.state != "SUCCESS"]
        first = served_by(results)
        assert first["server-a"] > 0 and first["server-b"] > 0, first

        # Back on the same port: the worker sees /health answer 200 and uses it again.
        revived = start_launcher(tmp_root, port=a.port, MODEL_ALIAS="server-a", **SMALL)
        two_servers[0] = revived
        time.sleep(1.5)  # a few health intervals
        again = [app.send_task("kcw.chat", args=[chat(100 + i)]) for i in range(16)]
        wait_until(lambda: all(r.ready() for r in again), 300, "the jobs after the restart")
        assert Counter(r.state for r in again) == {"SUCCESS": 16}
        assert served_by(again)["server-a"] > 0, served_by(again)
    finally:
        close_app(app)
    assert worker.alive()


def test_unreachable_second_server_does_not_stop_the_first(
    redis_server: RedisServer,
    llm_server: LLMServer,
    spawn_worker: Callable[..., tuple[Worker, Any]],
) -> None:
    # Nothing listens on port 9: every request goes to the server that is up.
    worker, submit = spawn_worker(f"{llm_server.url},http://127.0.0.1:9")
    for n in range(3):
        job = submit("chat", chat(n), timeout=120)
        assert job.state == "SUCCESS", job.result
    stop(worker.proc)
