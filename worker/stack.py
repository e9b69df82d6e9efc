"""`make up` / `make down`: Redis and the LLM server, by Docker compose or as local processes.

Compose is used where a Docker engine answers and the compose files are present;
otherwise `redis-server` and the llama.cpp launcher run as local processes with
their pid files, logs and data under `.run/`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from worker.config import Settings
from worker.health import check_llm_servers, check_redis

__all__ = ["stack_down", "stack_up"]

RUN_DIR = Path(".run")
LAUNCHER = Path("docker/llamacpp/launcher.py")
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.llamacpp.yml")


class StackError(RuntimeError):
    """The stack cannot start; the message says what to install or change."""


def docker_answers() -> bool:
    """True when a Docker engine answers `docker info`."""
    if not shutil.which("docker"):
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def gpu_fragment() -> tuple[str | None, str]:
    """The compose GPU fragment this host can use: NVIDIA, else AMD, else none (CPU)."""
    if shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        runtimes = subprocess.run(
            ["docker", "info", "--format", "{{json .Runtimes}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and "nvidia" in runtimes.stdout:
            first = probe.stdout.strip().splitlines()[0] if probe.stdout.strip() else "NVIDIA GPU"
            return "docker-compose.nvidia.yml", f"NVIDIA GPU ({first})"
        if probe.returncode == 0:
            return (
                None,
                "NVIDIA GPU found, but Docker has no nvidia runtime (install the NVIDIA "
                "Container Toolkit); using the CPU",
            )
    if Path("/dev/kfd").exists() and Path("/dev/dri").is_dir():
        return "docker-compose.rocm.yml", "AMD GPU (/dev/kfd)"
    return None, "no GPU: the llama.cpp server runs on the CPU"


def _image_present(image: str) -> bool:
    probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return probe.returncode == 0


def _pullable(image: str, out: TextIO) -> bool:
    out.write(f"pulling {image} ...\n")
    try:
        pulled = subprocess.run(
            ["docker", "pull", "--quiet", image], capture_output=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return pulled.returncode == 0


def compose_files(settings: Settings) -> list[str]:
    """The layering from COMPOSE_FILE (':'-separated), as plain `docker compose` would use."""
    files = [f for f in settings.compose_file.replace(",", ":").split(":") if f.strip()]
    return files or list(COMPOSE_FILES)


def missing_images(settings: Settings, files: list[str], out: TextIO) -> list[str]:
    """Upstream images compose would need but neither has nor can pull (offline, say)."""
    needed = [settings.redis_image]
    if "docker-compose.llamacpp.yml" in files and not _image_present(settings.llamacpp_image):
        needed.append(settings.llamacpp_base_image)
        if settings.llamacpp_runtime_image:
            needed.append(settings.llamacpp_runtime_image)
    if "docker-compose.vllm.cpu.yml" in files:
        if not _image_present(settings.vllm_cpu_local_image):
            needed.append(settings.vllm_cpu_base_image)
    elif "docker-compose.vllm.yml" in files and not _image_present(settings.vllm_local_image):
        needed.append(f"{settings.vllm_image}:{settings.vllm_version}")
    return [img for img in needed if not _image_present(img) and not _pullable(img, out)]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> int:
    RUN_DIR.mkdir(exist_ok=True)
    log = (RUN_DIR / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    (RUN_DIR / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _redis_conf(settings: Settings) -> Path:
    """A config file for redis-server, so the password never shows in `ps`."""
    data = (RUN_DIR / "redis-data").resolve()
    data.mkdir(parents=True, exist_ok=True)
    conf = RUN_DIR / "redis.conf"
    lines = [
        f"port {settings.redis_port}",
        "bind 127.0.0.1 -::1",
        f"dir {data}",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
        "save ''",
    ]
    password = settings.redis_password.get_secret_value()
    if password:
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{quoted}"')
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    return conf


def check_local(settings: Settings) -> None:
    """Everything the local stack needs, checked before anything starts (so nothing is left)."""
    if not shutil.which("redis-server") and not port_in_use(settings.redis_port):
        raise StackError(
            "redis-server is not installed: `sudo apt-get install -y redis-server` "
            "(Debian/Ubuntu) or `brew install redis` (macOS)"
        )
    if not _pid_alive(RUN_DIR / "llm-server.pid"):
        if port_in_use(settings.llm_port):
            raise StackError(
                f"port {settings.llm_port} is in use: stop what listens there, or set LLM_PORT "
                "and LLM_SERVER_URL in .env to a free port"
            )
        if not settings.model_path.is_file():
            raise StackError(
                f"model missing: {settings.model_path} does not exist; run `make model`"
            )
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise StackError(
                "llama-cpp-python is not installed in this venv: `make venv` installs it "
                "(extra `llamacpp`)"
            ) from None


def start_redis(settings: Settings, out: TextIO) -> None:
    pid = _pid_alive(RUN_DIR / "redis.pid")
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
    binary = shutil.which("redis-server")
    if not binary:
        raise StackError(
            "redis-server is not installed: `sudo apt-get install -y redis-server` "
            "(Debian/Ubuntu) or `brew install redis` (macOS)"
        )
    pid = _spawn("redis", [binary, str(_redis_conf(settings))], dict(os.environ))
    out.write(f"started redis-server on 127.0.0.1:{settings.redis_port} (pid {pid})\n")


def ensure_llama_server(env: dict[str, str], out: TextIO) -> None:
    """Build llama-server once (cached outside the repository) unless one is already given."""
    if env.get("LLAMA_SERVER_BIN") or shutil.which("llama-server"):
        return
    script = Path("scripts/llama-server-env")
    if not script.is_file():
        return  # not a checkout: the launcher says where it looked for llama-server
    if subprocess.run([str(script), "path"], capture_output=True, check=False).returncode == 0:
        return
    out.write(
        "building llama.cpp's llama-server from the pinned source, once (about 8 minutes on "
        "2 cores; LLAMACPP_ENGINE=python skips it)\n"
    )
    out.flush()
    if subprocess.run([str(script), "install"], check=False).returncode != 0:
        raise StackError(
            "building llama-server failed (see above): install cmake and g++, or set "
            "LLAMACPP_ENGINE=python in .env"
        )


def start_llm_server(settings: Settings, out: TextIO) -> None:
    pid = _pid_alive(RUN_DIR / "llm-server.pid")
    if pid:
        out.write(f"llama.cpp server already running (pid {pid})\n")
        return
    model = settings.model_path
    env = dict(os.environ)
    if settings.llamacpp_engine == "server":
        ensure_llama_server(env, out)
    env.update(
        MODEL_PATH=str(model.resolve()),
        HOST="127.0.0.1",
        PORT=str(settings.llm_port),
        N_CTX=str(settings.n_ctx),
        N_PARALLEL=str(settings.n_parallel),
        N_GPU_LAYERS=str(settings.n_gpu_layers),
        EMBEDDING="true" if settings.embedding else "false",
        LLAMACPP_ENGINE=settings.llamacpp_engine,
        LLM_API_KEY=settings.llm_api_key.get_secret_value(),
    )
    pid = _spawn("llm-server", [sys.executable, str(LAUNCHER)], env)
    engine = (
        f"llama-server, {settings.n_parallel} slots"
        if settings.llamacpp_engine == "server"
        else "llama-cpp-python"
    )
    out.write(
        f"started the llama.cpp server ({engine}) on 127.0.0.1:{settings.llm_port} (pid {pid})\n"
    )


def start_worker(out: TextIO) -> None:
    pid = _pid_alive(RUN_DIR / "worker.pid")
    if pid:
        out.write(f"worker already running (pid {pid})\n")
        return
    celery = Path(sys.executable).with_name("celery")
    pid = _spawn(
        "worker", [str(celery), "-A", "worker", "worker", "--loglevel=info"], dict(os.environ)
    )
    out.write(f"started a worker (pid {pid}); log in {RUN_DIR / 'worker.log'}\n")


def wait_ready(settings: Settings, timeout: float, out: TextIO) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checks = [check_redis(settings), *check_llm_servers(settings)]
        if all(c.ok for c in checks):
            for check in checks:
                out.write(f"ready: {check.name}: {check.detail}\n")
            return
        for name in ("redis", "llm-server"):
            pid_file = RUN_DIR / f"{name}.pid"
            if pid_file.exists() and not _pid_alive(pid_file):
                raise StackError(f"{name} exited at start; see {RUN_DIR / (name + '.log')}")
        time.sleep(0.5)
    raise StackError(f"not ready after {timeout:g}s; see the logs in {RUN_DIR}/")


def choose_stack(settings: Settings, out: TextIO) -> str:
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


def compose_command(files: list[str], *args: str) -> list[str]:
    command = ["docker", "compose"]
    for name in files:
        command += ["-f", name]
    return [*command, *args]


def stack_up(settings: Settings, out: TextIO, with_worker: bool = False) -> None:
    """Start Redis and the LLM server (and a background worker if asked), then wait."""
    RUN_DIR.mkdir(exist_ok=True)
    if choose_stack(settings, out) == "compose":
        files = compose_files(settings)
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


def _stop(name: str, out: TextIO) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    pid = _pid_alive(pid_file)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if not _pid_alive(pid_file):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        out.write(f"stopped {name} (pid {pid})\n")
    pid_file.unlink(missing_ok=True)


def stack_down(out: TextIO) -> None:
    """Stop whatever `stack_up` started."""
    mode_file = RUN_DIR / "mode"
    mode = mode_file.read_text().split() if mode_file.exists() else ["local"]
    for name in ("worker", "llm-server", "redis"):
        _stop(name, out)
    if mode[0] == "compose":
        command = compose_command(mode[1:] or list(COMPOSE_FILES), "down")
        out.write(f"running: {' '.join(command)}\n")
        subprocess.run(command, check=False)
    mode_file.unlink(missing_ok=True)
    out.write("stack stopped\n")
