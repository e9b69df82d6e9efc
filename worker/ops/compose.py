"""Docker compose for `kcw up`: is an engine there, which files and GPU fragment, which images."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TextIO

from worker.config import StackSettings

__all__ = [
    "COMPOSE_FILES",
    "compose_command",
    "compose_files",
    "docker_answers",
    "gpu_fragment",
    "missing_images",
]

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.llamacpp.yml")


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


def compose_files(settings: StackSettings) -> list[str]:
    """The layering from COMPOSE_FILE (':'-separated), as plain `docker compose` would use."""
    files = [f for f in settings.compose_file.replace(",", ":").split(":") if f.strip()]
    return files or list(COMPOSE_FILES)


def missing_images(settings: StackSettings, files: list[str], out: TextIO) -> list[str]:
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


def compose_command(files: list[str], *args: str) -> list[str]:
    command = ["docker", "compose"]
    for name in files:
        command += ["-f", name]
    return [*command, *args]
