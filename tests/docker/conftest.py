"""Fixtures of the Docker tier: the stand-in bases and the llama.cpp image, built once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.docker.compose_stack import leftovers, remove_leftovers
from tests.docker.standins import IMAGE, STANDIN_PYTHON, STANDIN_REDIS, VLLM_CPU_IMAGE
from tests.support.processes import HF_MODEL

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "docker/vllm/wheels"


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Every compose project and container the tier starts is removed with its networks and
    volumes: what an interrupted run left before this one, and all of this run's at its end,
    also when it fails, is stopped with Ctrl-C, or gets SIGTERM (turned into Ctrl-C here so
    pytest still runs its teardown)."""
    remove_leftovers()
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        removed = remove_leftovers()
        left = leftovers()
        assert not left, f"the Docker tier could not remove {left}"
        if removed:
            print(f"\nremoved what the Docker tier's tests left: {removed}")


@pytest.fixture(scope="session")
def llamacpp_image() -> str:
    """Build Dockerfile.llamacpp with the project's own build script, on the stand-in base."""
    for image in (STANDIN_REDIS, STANDIN_PYTHON):
        probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        assert probe.returncode == 0, f"{image} is missing: run `scripts/docker-env bases`"
    env = {**os.environ, "LLAMACPP_BASE_IMAGE": STANDIN_PYTHON, "LLAMACPP_IMAGE": IMAGE}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/build_images.py"), "llamacpp", "--network", "host"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{IMAGE}  " in done.stdout and " MB" in done.stdout, done.stdout[-500:]
    return IMAGE


@pytest.fixture(scope="session")
def vllm_cpu_image() -> str:
    # The same CPU check as the vLLM venv's (scripts/vllm-env), so the tiers skip alike.
    cpu = subprocess.run([str(ROOT / "scripts/vllm-env"), "check"], capture_output=True, text=True)
    if cpu.returncode == 3:
        pytest.skip(cpu.stderr.strip())
    if not (HF_MODEL / "config.json").is_file():
        pytest.fail(f"{HF_MODEL} is missing: run `make models-hf`")
    # torch's +cpu wheel is not on PyPI; the local pip configuration can supply it.
    fetched = subprocess.run(
        [
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "torch==2.13.0+cpu",
            "--python-version",
            "3.11",
            "--only-binary=:all:",
            "-d",
            str(WHEELS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    torch_index = "" if fetched.returncode == 0 else "https://download.pytorch.org/whl/cpu"
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    done = subprocess.run(
        [
            "/usr/bin/docker",
            "build",
            "--network",
            "host",
            "--target",
            "cpu",
            "--build-arg",
            f"CPU_BASE_IMAGE={STANDIN_PYTHON}",
            "--build-arg",
            f"TORCH_INDEX_URL={torch_index}",
            "-f",
            "Dockerfile.vllm",
            "-t",
            VLLM_CPU_IMAGE,
            ".",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return VLLM_CPU_IMAGE
