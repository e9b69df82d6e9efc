"""`make up` / `make down`: Redis and the LLM server, by Docker compose or as local processes.

Compose is used where a Docker engine answers and the compose files are present;
otherwise `redis-server` and the llama.cpp launcher run as local processes with
their pid files, logs and data under `.run/`. A worker and `kcw serve` run on the host
either way, in the background when asked (`kcw up --worker --api`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from worker.config import ApiSettings, StackSettings
from worker.errors import ProcessStartError, StackError
from worker.ops.api_server import api_answers, kcw_bin
from worker.ops.compose import (
    COMPOSE_FILES,
    compose_command,
    compose_files,
    docker_answers,
    gpu_fragment,
    missing_images,
)
from worker.ops.health import check_redis, wait_until_ready
from worker.ops.llm_servers import ensure_llama_server, launcher_env
from worker.ops.processes import pid_alive, port_in_use, spawn_detached, stop_detached
from worker.ops.redis_server import redis_binary, redis_conf
from worker.ops.workers import worker_argv

__all__ = ["stack_down", "stack_up", "start_api"]

RUN_DIR = Path(".run")
LAUNCHER = Path("docker/llamacpp/launcher.py")


def _redis_conf(settings: StackSettings) -> Path:
    """A config file for redis-server, so the password never shows in `ps`."""
    data = (RUN_DIR / "redis-data").resolve()
    data.mkdir(parents=True, exist_ok=True)
    conf = RUN_DIR / "redis.conf"
    conf.write_text(
        redis_conf(
            settings.redis_port,
            data,
            settings.redis_password.get_secret_value(),
            maxmemory=settings.redis_maxmemory,
        )
    )
    conf.chmod(0o600)
    return conf


def _redis_server() -> str:
    """The redis-server binary, or `StackError` saying how to install it."""
    try:
        return redis_binary()
    except ProcessStartError as exc:
        raise StackError(str(exc)) from None


def require_model(settings: StackSettings) -> None:
    """`StackError` naming the key that chose the GGUF model when its file is not there."""
    if not settings.gguf_path.is_file():
        raise StackError(
            f"model missing: {settings.gguf_path} does not exist ({settings.model_setting}); "
            "put the GGUF file there or fix the key in .env (`make model` fetches the default)"
        )


def check_local(settings: StackSettings) -> None:
    """Everything the local stack needs, checked before anything starts (so nothing is left)."""
    if not port_in_use(settings.redis_port):
        _redis_server()
    if not pid_alive(RUN_DIR / "llm-server.pid"):
        if port_in_use(settings.llm_port):
            raise StackError(
                f"port {settings.llm_port} is in use: stop what listens there, or set LLM_PORT "
                "and LLM_SERVER_URL in .env to a free port"
            )
        require_model(settings)
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise StackError(
                "llama-cpp-python is not installed in this venv: `make venv` installs it "
                "(extra `llamacpp`)"
            ) from None


def start_redis(settings: StackSettings, out: TextIO) -> None:
    pid = pid_alive(RUN_DIR / "redis.pid")
    if pid:
        out.write(f"redis-server already running (pid {pid})\n")
        return
    if port_in_use(settings.redis_port):
        if check_redis(settings).ok:
            out.write(f"a Redis already answers on port {settings.redis_port}; using it\n")
            return
        raise StackError(
            f"port {settings.redis_port} is in use by something that is not our Redis: stop it, "
            "or set REDIS_PORT in .env to a free port"
        )
    binary = _redis_server()
    pid = spawn_detached(RUN_DIR, "redis", [binary, str(_redis_conf(settings))], os.environ)
    out.write(f"started redis-server on 127.0.0.1:{settings.redis_port} (pid {pid})\n")


def start_llm_server(settings: StackSettings, out: TextIO) -> None:
    pid = pid_alive(RUN_DIR / "llm-server.pid")
    if pid:
        out.write(f"llama.cpp server already running (pid {pid})\n")
        return
    model = settings.gguf_path
    env = dict(os.environ)
    if settings.llamacpp_engine == "server":
        ensure_llama_server(env, out)
    env = launcher_env(
        env,
        model=model.resolve(),
        port=settings.llm_port,
        N_CTX=str(settings.n_ctx),
        N_PARALLEL=str(settings.n_parallel),
        N_GPU_LAYERS=str(settings.n_gpu_layers),
        EMBEDDING="true" if settings.embedding else "false",
        LLAMACPP_ENGINE=settings.llamacpp_engine,
        LLM_API_KEY=settings.llm_api_key.get_secret_value(),
    )
    pid = spawn_detached(RUN_DIR, "llm-server", [sys.executable, str(LAUNCHER)], env)
    engine = (
        f"llama-server, {settings.n_parallel} slots"
        if settings.llamacpp_engine == "server"
        else "llama-cpp-python"
    )
    out.write(
        f"started the llama.cpp server ({engine}) on 127.0.0.1:{settings.llm_port} (pid {pid})\n"
    )


def start_worker(out: TextIO) -> None:
    pid = pid_alive(RUN_DIR / "worker.pid")
    if pid:
        out.write(f"worker already running (pid {pid})\n")
        return
    pid = spawn_detached(RUN_DIR, "worker", worker_argv(), os.environ)
    out.write(f"started a worker (pid {pid}); log in {RUN_DIR / 'worker.log'}\n")


def start_api(settings: ApiSettings, out: TextIO, timeout: float = 60.0) -> None:
    """`kcw serve` in the background (log in .run/api.log); waits until its /health answers."""
    url = settings.api_url
    pid = pid_alive(RUN_DIR / "api.pid")
    if pid:
        out.write(f"Batch API already running (pid {pid}) at {url}\n")
        return
    argv = [kcw_bin(), "serve"]
    pid = spawn_detached(RUN_DIR, "api", argv, os.environ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(RUN_DIR / "api.pid"):
            raise StackError(f"kcw serve exited at start; see {RUN_DIR / 'api.log'}")
        if api_answers(url):
            out.write(f"started the Batch API (pid {pid}) at {url}; log in {RUN_DIR}/api.log\n")
            return
        time.sleep(0.5)
    raise StackError(f"kcw serve did not answer at {url}/health in {timeout:g}s; see .run/api.log")


def _exited_at_start() -> None:
    for name in ("redis", "llm-server"):
        pid_file = RUN_DIR / f"{name}.pid"
        if pid_file.exists() and not pid_alive(pid_file):
            raise StackError(f"{name} exited at start; see {RUN_DIR / (name + '.log')}")


def wait_ready(settings: StackSettings, timeout: float, out: TextIO) -> None:
    ready, checks = wait_until_ready(settings, timeout, interval=0.5, watch=_exited_at_start)
    if not ready:
        raise StackError(f"not ready after {timeout:g}s; see the logs in {RUN_DIR}/")
    for check in checks:
        out.write(f"ready: {check.name}: {check.detail}\n")


def choose_stack(settings: StackSettings, out: TextIO) -> str:
    """compose or local, by KCW_STACK and whether a Docker engine answers; says which and why."""
    if settings.kcw_stack == "local":
        out.write("KCW_STACK=local: starting local processes (logs in .run/)\n")
        return "local"
    if not docker_answers():
        if settings.kcw_stack == "compose":
            raise StackError(
                "KCW_STACK=compose but no Docker engine answers: start Docker, or set "
                "KCW_STACK=auto"
            )
        out.write("no Docker engine answers: starting local processes instead (logs in .run/)\n")
        return "local"
    missing = missing_images(settings, compose_files(settings), out)
    if missing:
        message = (
            f"a Docker engine answers, but it cannot pull {', '.join(missing)} (offline?). "
            "Ways out: build local stand-in bases (`scripts/docker-env bases`, then set "
            "REDIS_IMAGE=local/redis:7-standin and LLAMACPP_BASE_IMAGE=local/python-base:bookworm "
            "in .env), or run the local stack (KCW_STACK=local)"
        )
        if settings.kcw_stack == "compose":
            raise StackError(message)
        out.write(message + ". Starting the local stack now.\n")
        return "local"
    return "compose"


def check_compose_model(settings: StackSettings, files: list[str]) -> None:
    """The llama.cpp container sees models/gguf/ as /models: a GGUF it cannot see would be
    replaced by the bundled default, so say so before starting."""
    if "docker-compose.llamacpp.yml" not in files:
        return
    if settings.model_path and not settings.model_path.startswith("/models/"):
        raise StackError(
            f"MODEL_PATH={settings.model_path} is a host path, which the llama.cpp container "
            "cannot see: put the file in models/gguf/ and set MODEL_PATH=/models/<file> "
            "(or KCW_STACK=local to serve it without Docker)"
        )
    require_model(settings)


def stack_up(
    settings: StackSettings,
    out: TextIO,
    with_worker: bool = False,
    api: ApiSettings | None = None,
) -> None:
    """Start Redis and the LLM server, then wait; a background worker and `kcw serve` if asked."""
    RUN_DIR.mkdir(exist_ok=True)
    if choose_stack(settings, out) == "compose":
        files = compose_files(settings)
        check_compose_model(settings, files)
        if "docker-compose.llamacpp.yml" in files and not any(
            f in files for f in ("docker-compose.nvidia.yml", "docker-compose.rocm.yml")
        ):
            fragment, hardware = gpu_fragment()
            out.write(f"hardware: {hardware}\n")
            files += [fragment] if fragment else []
        command = compose_command(files, "up", "-d", "--wait")
        out.write(f"running: {' '.join(command)}\n")
        out.flush()
        try:
            subprocess.run(command, check=True)
        except subprocess.CalledProcessError:
            raise StackError(
                "docker compose up failed; see `docker compose logs` (the command is above)"
            ) from None
        (RUN_DIR / "mode").write_text("compose " + " ".join(files) + "\n")
    else:
        check_local(settings)
        (RUN_DIR / "mode").write_text("local\n")
        start_redis(settings, out)
        start_llm_server(settings, out)
    wait_ready(settings, 300.0, out)
    if with_worker:
        start_worker(out)
    if api is not None:
        start_api(api, out)


def stack_down(out: TextIO) -> None:
    """Stop whatever `stack_up` started."""
    mode_file = RUN_DIR / "mode"
    mode = mode_file.read_text().split() if mode_file.exists() else ["local"]
    for name in ("api", "worker", "llm-server", "redis"):
        stop_detached(RUN_DIR, name, out)
    if mode[0] == "compose":
        command = compose_command(mode[1:] or list(COMPOSE_FILES), "down")
        out.write(f"running: {' '.join(command)}\n")
        subprocess.run(command, check=False)
    mode_file.unlink(missing_ok=True)
    out.write("stack stopped\n")
