"""The real parts of the integration, fault and Docker tiers: redis-server, LLM servers, workers.

They are started by `worker.ops`, as `kcw up` and the bench start them; this module only
turns their start errors into test outcomes (`ProcessStartError` fails the test with its
message, `NotRunnableHere` skips it) and gives the tests' defaults: every process on a free
port on 127.0.0.1, from a temporary directory with no `.env`, and short retry waits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from worker.broker import make_app
from worker.client import JobClient
from worker.errors import NotRunnableHere, ProcessStartError
from worker.jobs.kind import task_name
from worker.ops import api_server, llm_servers, redis_server, workers
from worker.ops.api_server import ApiServer
from worker.ops.llm_servers import HF_MODEL, LAUNCHER, MODEL, SERVED_NAME, LLMServer, wait_healthy
from worker.ops.processes import free_port, stop, wait_until
from worker.ops.redis_server import RedisServer
from worker.ops.workers import Worker

__all__ = [
    "API_KEY",
    "BIN",
    "HF_MODEL",
    "LAUNCHER",
    "MODEL",
    "ROOT",
    "SERVED_NAME",
    "TEST_WORKER_SETTINGS",
    "ApiServer",
    "LLMServer",
    "RedisServer",
    "Worker",
    "api_client",
    "cli_env",
    "client_app",
    "free_port",
    "run_kcw",
    "start_api",
    "start_launcher",
    "start_redis",
    "start_vllm",
    "start_worker",
    "stop",
    "submitter",
    "vllm_python",
    "wait_healthy",
    "wait_until",
    "worker_env",
]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Short waits, so a test of retries ends in seconds; a test may override any of them.
TEST_WORKER_SETTINGS = {
    "LLM_RETRY_MAX_WAIT": "2",
    "TASK_RETRY_BACKOFF_MAX": "4",
    "WORKER_CONCURRENCY": "4",
    # No metrics port per test worker; the metrics tests turn it on for theirs.
    "WORKER_METRICS_PORT": "0",
}
# The bearer key of every `kcw serve` the tests start.
API_KEY = "test-batch-key-8Gq2"
# Redis dbs of the session's server that a test reads by number, with no worker on them;
# extra workers get the others (the session worker has 0).
RELIABLE_FETCH_DB = 9
BATCH_FEEDER_DB = 12


def _started(start: Callable[[], T]) -> T:
    """Run `start`; a part this machine cannot run skips the test, a failed start fails it."""
    try:
        return start()
    except NotRunnableHere as exc:
        pytest.skip(str(exc))
    except ProcessStartError as exc:
        pytest.fail(str(exc))


def start_redis(tmp: Path, password: str, port: int = 0, appendonly: bool = False) -> RedisServer:
    """redis-server on 127.0.0.1 with a password; `appendonly` as in the compose file.

    Started again with the same `port` and `tmp`, it reloads what it persisted.
    """
    return _started(
        lambda: redis_server.start_redis(tmp, password, port=port, appendonly=appendonly)
    )


def start_launcher(
    tmp: Path,
    model: Path | str = MODEL,
    wait: bool = True,
    port: int = 0,
    port_wait: bool = True,
    **env: str,
) -> LLMServer:
    """The llama.cpp launcher (engine from LLAMACPP_ENGINE, llama-server by default)."""
    return _started(
        lambda: llm_servers.start_launcher(
            tmp, model, wait=wait, port=port, port_wait=port_wait, **env
        )
    )


def vllm_python() -> str:
    """The vLLM venv's python, or a skip that says plainly why vLLM cannot run here."""
    return _started(llm_servers.vllm_python)


def start_vllm(tmp: Path, port: int = 0, *extra: str, **env: str) -> LLMServer:
    """A real vLLM OpenAI server on the CPU, serving the default model as safetensors."""
    return _started(lambda: llm_servers.start_vllm(tmp, port, *extra, **env))


def worker_env(redis_server: RedisServer, llm_url: str, **overrides: str) -> dict[str, str]:
    """This environment without worker keys, plus the test Redis, `llm_url` and short waits."""
    settings = {**TEST_WORKER_SETTINGS, **overrides}
    return workers.worker_env(
        os.environ,
        redis_port=redis_server.port,
        redis_password=redis_server.password,
        llm_url=llm_url,
        redis_db=int(settings.pop("REDIS_DB", "0")),
        **settings,
    )


def start_worker(tmp: Path, env: dict[str, str], name: str) -> Worker:
    """A celery worker `name@<host>` run from `tmp`, ready to take jobs."""
    return _started(lambda: workers.start_worker(tmp, env, name))


def start_api(
    tmp: Path,
    env: dict[str, str],
    name: str,
    *,
    port: int = 0,
    data: Path | None = None,
    key: str = API_KEY,
) -> ApiServer:
    """`kcw serve` on `port` (free if 0) with its files in `data` (`<tmp>/<name>-data`).

    Started again with the same `port` and `data` (and Redis), it takes over the batches
    of one that died, at the same address.
    """
    settings = {**env, "KCW_API_KEY": key}
    return _started(
        lambda: api_server.start_api(tmp, settings, name, port=port, data=data, timeout=90)
    )


def api_client(api: ApiServer, key: str | None = None) -> openai.OpenAI:
    """The official openai SDK pointed at `api`, with its own retries off (a test sees all)."""
    return openai.OpenAI(
        base_url=f"{api.url}/v1", api_key=api.key if key is None else key, max_retries=0
    )


def client_app(redis_server: RedisServer, db: int = 0) -> Any:
    """A client-side Celery app on a test Redis, configured like the worker (not from .env)."""
    return make_app(redis_server.worker_settings(db), main="kcw-tests")


def submitter(app: Any) -> Callable[..., Any]:
    """Send a job by name through `app` and wait for it to end; returns Celery's AsyncResult.

    Any name under `kcw.` is sent as it is, registered kind or not, so tests can send
    names no worker knows.
    """
    client = JobClient(app=app)

    def run(kind: str, payload: Any, timeout: float = 300) -> Any:
        job = client.send(task_name(kind), payload, kind=kind)
        return job.wait(timeout, poll=0.1).async_result

    return run


def cli_env(redis_server: RedisServer, llm_url: str, **overrides: str) -> dict[str, str]:
    return worker_env(redis_server, llm_url, **overrides)


def run_kcw(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kcw"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
