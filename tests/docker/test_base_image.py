"""The llama.cpp image built from its prebuilt base is the same server as the regular one.

The base (the `compiled` target of Dockerfile.llamacpp) and an image from it
(`PREBUILT_IMAGE`) are built with scripts/build_images.py's own functions on the stand-in
base, then compared with the regular image (`make images`, the session's `llamacpp_image`)
and with a build that compiles in one go (`--no-base`): the same llama-server binary, model
and llama-cpp-python libraries, and, running, the same `/props` and models. No timing here:
`make bench-images` measures the builds.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docker.compose_stack import server_container
from tests.docker.standins import STANDIN_PYTHON
from tests.support.scripts import load_script
from worker.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
# What makes the server: llama-server, the default model, llama-cpp-python's libraries.
FINGERPRINT = (
    "cd / && sha256sum usr/local/bin/llama-server opt/kcw/default-model/*.gguf "
    "$(find opt/venv -path '*/llama_cpp/lib/*' -type f | sort)"
)


bi = load_script("build_images")


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
    cli = bi.buildkit_cli()
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
        with (
            server_container(llamacpp_image, cli=cli) as (_, regular_url),
            server_container(from_base_tag, cli=cli) as (_, from_url),
        ):
            assert served(from_url) == served(regular_url)
    finally:
        for tag in (from_base_tag, one_build_tag, base_tag):
            subprocess.run([cli, "rmi", tag], capture_output=True, check=False)
