#!/usr/bin/env python3
"""Build the kc-worker server images, tag them `latest` and the project version, print sizes.

    scripts/build_images.py [llamacpp] [vllm] [vllm-cpu] [--push] [--network host]

Base images and build flags come from the settings (.env): LLAMACPP_BASE_IMAGE,
LLAMACPP_RUNTIME_IMAGE, LLAMACPP_CMAKE_ARGS, VLLM_IMAGE, VLLM_VERSION. `--push`
pushes both tags to IMAGE_REGISTRY and is the only way anything is pushed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.config import Settings, SettingsError, load_settings  # noqa: E402


def project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def docker_cli() -> str:
    """Debian's docker CLI builds with BuildKit where the newer one lacks buildx."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def engine_answers(cli: str) -> bool:
    if not shutil.which(cli):
        return False
    probe = subprocess.run([cli, "info"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def image_size(cli: str, tag: str) -> str:
    out = subprocess.run(
        [cli, "image", "inspect", "--format", "{{.Size}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{int(out.stdout.strip()) / 1e6:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", choices=["llamacpp", "vllm", "vllm-cpu"], default=[])
    parser.add_argument("--push", action="store_true", help="push to IMAGE_REGISTRY")
    parser.add_argument("--network", help="build network, e.g. host")
    args = parser.parse_args()
    os.chdir(ROOT)  # .env and the build context live there
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    cli = docker_cli()
    if not engine_answers(cli):
        print(
            "no Docker engine answers: start Docker (or `scripts/docker-env engine` here), "
            "then run this again",
            file=sys.stderr,
        )
        return 1
    if args.push and not settings.image_registry:
        print("--push needs IMAGE_REGISTRY in .env (e.g. ghcr.io/you)", file=sys.stderr)
        return 2
    version = project_version()
    builds = {
        "llamacpp": (
            "Dockerfile.llamacpp",
            settings.llamacpp_image.split(":")[0],
            {
                "BASE_IMAGE": settings.llamacpp_base_image,
                "RUNTIME_IMAGE": settings.llamacpp_runtime_image,
                "CMAKE_ARGS": settings.llamacpp_cmake_args,
            },
        ),
        "vllm": (
            "Dockerfile.vllm",
            settings.vllm_local_image.split(":")[0],
            {"VLLM_IMAGE": settings.vllm_image, "VLLM_VERSION": settings.vllm_version},
        ),
        "vllm-cpu": (
            "Dockerfile.vllm",
            settings.vllm_cpu_local_image.split(":")[0],
            {"CPU_BASE_IMAGE": settings.vllm_cpu_base_image},
        ),
    }
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for name in args.images or ["llamacpp", "vllm"]:  # vllm-cpu only when asked
        dockerfile, repo, build_args = builds[name]
        tags = [f"{repo}:latest", f"{repo}:{version}"]
        command = [cli, "build", "-f", dockerfile]
        if name == "vllm-cpu":
            command += ["--target", "cpu"]
        for tag in tags:
            command += ["-t", tag]
        for key, value in build_args.items():
            if value:
                command += ["--build-arg", f"{key}={value}"]
        if args.network:
            command += ["--network", args.network]
        command.append(".")
        print("$ " + " ".join(command), flush=True)
        if subprocess.run(command, cwd=ROOT, env=env, check=False).returncode != 0:
            print(f"building {name} failed (see above)", file=sys.stderr)
            return 1
        print(f"{tags[0]}  {image_size(cli, tags[0])}  (also tagged {tags[1]})", flush=True)
        if args.push:
            for tag in tags:
                remote = f"{settings.image_registry.rstrip('/')}/{tag}"
                subprocess.run([cli, "tag", tag, remote], check=True)
                subprocess.run([cli, "push", remote], check=True)
                print(f"pushed {remote}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
