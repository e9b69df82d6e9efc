"""Fixtures of the Docker tier: the stand-in bases and the llama.cpp image, built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docker.standins import IMAGE, STANDIN_PYTHON, STANDIN_REDIS

ROOT = Path(__file__).resolve().parents[2]


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
