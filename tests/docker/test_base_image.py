"""The llama.cpp image built from its prebuilt base is the same server as the regular one.

The base (the `compiled` target of Dockerfile.llamacpp) and an image from it
(`PREBUILT_IMAGE`) are built with scripts/build_images.py's own functions on the stand-in
base, then compared with the regular image (`make images`, the session's `llamacpp_image`)
and with a build that compiles in one go (`--no-base`): the same llama-server binary, model
and llama-cpp-python libraries, and, running, the same `/props` and models. No timing here:
`make bench-images` measures the builds.
"""

from __future__ import annotations

import importlib.util
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.docker.standins import STANDIN_PYTHON
from tests.support.processes import free_port, wait_until
from worker.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
# What makes the server: llama-server, the default model, llama-cpp-python's libraries.
FINGERPRINT = (
    "cd / && sha256sum usr/local/bin/llama-server opt/kcw/default-model/*.gguf "
    "$(find opt/venv -path '*/llama_cpp/lib/*' -type f | sort)"
)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_images", ROOT / "scripts/build_images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_images"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


bi = _script()


def fingerprint(cli: str, image: str) -> dict[str, str]:
    """sha256 of each file that makes the server in `image`, by path."""
    done = subprocess.run(
        [cli, "run", "--rm", "--entrypoint", "sh", image, "-c", FINGERPRINT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{image}: {done.stderr}"
    files = dict(reversed(line.split(maxsplit=1)) for line in done.stdout.splitlines())
    assert len(files) >= 3, f"{image} lacks llama-server, the model or llama_cpp: {files}"
    return files


@contextmanager
def server(cli: str, image: str) -> Iterator[str]:
    """`docker run -d` the image on a free loopback port; its URL once /health answers."""
    port = free_port()
    name = f"kcwtest-base-{secrets.token_hex(3)}"
    subprocess.run(
        [cli, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", image],
        check=True,
        capture_output=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 120, f"{image} ready")
        yield url
    finally:
        subprocess.run([cli, "rm", "-f", name], capture_output=True, check=False)


def served(url: str) -> dict[str, Any]:
    """What a client sees of the server: its build, model and slots."""
    props = httpx.get(f"{url}/props", timeout=10).json()
    models = httpx.get(f"{url}/v1/models", timeout=10).json()
    return {
        "build_info": props["build_info"],
        "model_path": props["model_path"],
        "model_alias": props.get("model_alias"),
        "total_slots": props["total_slots"],
        "models": [m["id"] for m in models["data"]],
    }


@pytest.mark.timeout(3600)  # a cold layer cache compiles llama.cpp again
def test_the_image_from_the_base_is_the_same_server(
    llamacpp_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settings the session's build used: .env, with the stand-in base.
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("LLAMACPP_BASE_IMAGE", STANDIN_PYTHON)
    monkeypatch.delenv("LLAMACPP_PREBUILT_IMAGE", raising=False)
    build = bi.llamacpp_build(load_settings(Settings))
    cli = bi.docker_cli()
    token = secrets.token_hex(3)
    base_tag = f"{build.repo}-base:kcwtest-{token}"
    from_base_tag = f"{build.repo}:kcwtest-from-base-{token}"
    one_build_tag = f"{build.repo}:kcwtest-one-build-{token}"
    base = bi.ImageBuild("llamacpp base", build.dockerfile, build.repo, build.args(), "compiled")
    from_base = bi.ImageBuild(
        build.name,
        build.dockerfile,
        build.repo,
        build.build_args,
        extra_args={"PREBUILT_IMAGE": base_tag},
    )
    try:
        bi.docker_build(cli, base, [base_tag], network="host")
        assert bi.image_labels(cli, base_tag)["kc-worker.base-image"] == STANDIN_PYTHON
        bi.docker_build(cli, from_base, [from_base_tag], network="host")
        bi.docker_build(cli, build, [one_build_tag], network="host")

        regular = fingerprint(cli, llamacpp_image)
        assert fingerprint(cli, from_base_tag) == regular, "not the regular image's server"
        assert fingerprint(cli, one_build_tag) == regular, "not the one-build image's server"
        with server(cli, llamacpp_image) as regular_url, server(cli, from_base_tag) as from_url:
            assert served(from_url) == served(regular_url)
    finally:
        for tag in (from_base_tag, one_build_tag, base_tag):
            subprocess.run([cli, "rmi", tag], capture_output=True, check=False)
