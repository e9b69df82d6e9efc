"""Docker compose for `kcw up`: is an engine there, which files and GPU fragment, which images."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, TextIO

from worker.config import StackSettings

__all__ = [
    "COMPOSE_FILES",
    "buildkit_cli",
    "compose_command",
    "compose_files",
    "container_hint",
    "docker_answers",
    "gpu_fragment",
    "image_bytes",
    "image_present",
    "missing_images",
]

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.llamacpp.yml")


def docker_answers(cli: str = "docker") -> bool:
    """True when a Docker engine answers `docker info`."""
    if not shutil.which(cli):
        return False
    try:
        probe = subprocess.run([cli, "info"], capture_output=True, timeout=15, check=False)
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


def buildkit_cli() -> str:
    """The docker CLI for builds: Debian's builds with BuildKit (RUN --mount) where the newer
    one first on PATH lacks buildx; both talk to the same engine."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def image_present(image: str, cli: str = "docker") -> bool:
    """True when the engine has `image` locally."""
    probe = subprocess.run([cli, "image", "inspect", image], capture_output=True, check=False)
    return probe.returncode == 0


def image_bytes(image: str, cli: str = "docker") -> int:
    """The size of a local image in bytes."""
    out = subprocess.run(
        [cli, "image", "inspect", "--format", "{{.Size}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def _pullable(image: str, out: TextIO) -> bool:
    out.write(f"pulling {image} ...\n")
    try:
        pulled = subprocess.run(
            ["docker", "pull", "--quiet", image], capture_output=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return pulled.returncode == 0


def compose_files(settings: StackSettings) -> list[str]:
    """The layering from COMPOSE_FILE (':'-separated), as plain `docker compose` would use."""
    files = [f for f in settings.compose_file.replace(",", ":").split(":") if f.strip()]
    return files or list(COMPOSE_FILES)


def missing_images(settings: StackSettings, files: list[str], out: TextIO) -> list[str]:
    """Upstream images compose would need but neither has nor can pull (offline, say)."""
    needed = [settings.redis_image]
    if "docker-compose.llamacpp.yml" in files and not image_present(settings.llamacpp_image):
        needed.append(settings.llamacpp_base_image)
        if settings.llamacpp_runtime_image:
            needed.append(settings.llamacpp_runtime_image)
    if "docker-compose.vllm.cpu.yml" in files:
        if not image_present(settings.vllm_cpu_local_image):
            needed.append(settings.vllm_cpu_base_image)
    elif "docker-compose.vllm.yml" in files and not image_present(settings.vllm_local_image):
        needed.append(f"{settings.vllm_image}:{settings.vllm_version}")
    return [img for img in needed if not image_present(img) and not _pullable(img, out)]


def compose_command(files: list[str], *args: str) -> list[str]:
    command = ["docker", "compose"]
    for name in files:
        command += ["-f", name]
    return [*command, *args]


# What the llama.cpp launcher logs when the memory limit cannot hold the model.
MEMORY_LINE = "the memory limit of this container"


def _docker(*args: str) -> str | None:
    """stdout of a docker command, or None when there is no engine or it fails."""
    if not shutil.which("docker"):
        return None
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _published_on(container: dict[str, Any], port: int) -> bool:
    bindings = (container.get("HostConfig") or {}).get("PortBindings") or {}
    return any(
        str(b.get("HostPort")) == str(port) for binds in bindings.values() for b in binds or []
    )


def container_hint(service: str, port: int) -> str | None:
    """Why the compose `service` published on `port` is down, when Docker can tell: killed
    for memory, or our launcher's own line about its memory limit."""
    ids = _docker("ps", "-aq", "--filter", f"label=com.docker.compose.service={service}")
    if not ids or not ids.split():
        return None
    inspected = _docker("inspect", *ids.split())
    if inspected is None:
        return None
    for container in json.loads(inspected):
        if not _published_on(container, port):
            continue
        state = container.get("State") or {}
        limit = int((container.get("HostConfig") or {}).get("Memory") or 0)
        logs = subprocess.run(
            ["docker", "logs", "--tail", "50", container["Id"]],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        said = [line for line in (logs.stdout + logs.stderr).splitlines() if MEMORY_LINE in line]
        if said:
            return said[-1].split("ERROR kcw.launcher: ")[-1]
        if state.get("OOMKilled"):
            size = f" of {limit >> 20} MiB" if limit else ""
            return (
                f"the {service} container was killed for memory (OOMKilled) under its limit"
                f"{size}: raise LLM_MEMORY_LIMIT in .env, then `make up`"
            )
    return None
