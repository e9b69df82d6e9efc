#!/usr/bin/env python3
"""Build the kc-worker server images, tag them `latest` and the project version, print sizes.

    scripts/build_images.py [llamacpp] [vllm] [vllm-cpu] [--push] [--network host] [--no-base]

Base images and build flags come from the settings (.env): LLAMACPP_BASE_IMAGE,
LLAMACPP_RUNTIME_IMAGE, LLAMACPP_CMAKE_ARGS, LLAMACPP_PREBUILT_IMAGE, VLLM_IMAGE,
VLLM_VERSION. `--push` pushes the tags to IMAGE_REGISTRY and is the only way anything is
pushed.

The llama.cpp image is built in two steps: first its base, the `compiled` target of
Dockerfile.llamacpp (llama-cpp-python's venv, llama-server, the default model), tagged
`kc-worker-llamacpp-base:<llama-cpp-python version>-<cpu|cuda|rocm|...>-<hash>`, where the hash
covers BASE_IMAGE, CMAKE_ARGS, GGML_CPU_ARGS and the compile recipe; then the image with
`PREBUILT_IMAGE=<that tag>`, which skips the compiling. The base is reused when that tag is
here already, or pulled from IMAGE_REGISTRY when it is there, and pushed with `--push`.
LLAMACPP_PREBUILT_IMAGE names a base to use as it is; `--no-base` compiles in one build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.config import Settings, SettingsError, load_settings  # noqa: E402
from worker.ops.compose import (  # noqa: E402
    buildkit_cli,
    docker_answers,
    image_bytes,
    image_present,
)

LLAMACPP_DOCKERFILE = "Dockerfile.llamacpp"
BASE_TARGET = "compiled"
# The stage that ends the compile recipe: everything above it goes into the base.
PREBUILT_STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+prebuilt\s*$", re.I | re.M)
# Files the compile stages COPY in: a change to them is a change to the base.
RECIPE_FILES = ("scripts/fetch_model.py", "scripts/llama-server-env")
# CMake switches that name a GPU backend, and the word the base tag uses for each.
GPU_FLAVOURS = {
    "CUDA": "cuda",
    "HIP": "rocm",
    "VULKAN": "vulkan",
    "SYCL": "sycl",
    "MUSA": "musa",
    "OPENCL": "opencl",
}


class BuildError(RuntimeError):
    """A docker build, pull or push failed; the message says which and what to check."""


@dataclass(frozen=True)
class ImageBuild:
    """One image to build: its Dockerfile, tag repository, build arguments and target."""

    name: str
    dockerfile: str
    repo: str
    build_args: dict[str, str]
    target: str | None = None
    extra_args: dict[str, str] = field(default_factory=dict)

    def args(self) -> dict[str, str]:
        """The build arguments passed on the command line (empty ones are left out)."""
        return {k: v for k, v in {**self.build_args, **self.extra_args}.items() if v}


def project_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def image_repo(image: str) -> str:
    """`image` without its tag (a registry's `host:port/` is kept)."""
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


def image_size(cli: str, tag: str) -> str:
    return f"{image_bytes(tag, cli) / 1e6:,.0f} MB"


def image_labels(cli: str, tag: str) -> dict[str, str]:
    """The labels of a local image; empty when it has none or is not here."""
    out = subprocess.run(
        [cli, "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {}
    labels = json.loads(out.stdout.strip() or "null")
    return {str(k): str(v) for k, v in (labels or {}).items()}


def registry_name(registry: str, tag: str) -> str:
    """`tag` under IMAGE_REGISTRY, e.g. ghcr.io/you/kc-worker-llamacpp-base:…"""
    return f"{registry.rstrip('/')}/{tag}"


# ---------------------------------------------------------------- naming the llama.cpp base


def dockerfile_arg(text: str, name: str) -> str:
    """The default of a global `ARG name=value` of a Dockerfile (quotes removed)."""
    match = re.search(rf"^ARG\s+{re.escape(name)}=(.*)$", text, re.M)
    if match is None:
        raise ValueError(f"{LLAMACPP_DOCKERFILE} has no `ARG {name}=...` default")
    value = match.group(1).strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value


def flavour(cmake_args: str) -> str:
    """`cuda`, `rocm`, ... when CMAKE_ARGS switches a GPU backend on, else `cpu`."""
    for switch, word in GPU_FLAVOURS.items():
        if re.search(rf"-DGGML_{switch}=(on|1|true|yes)\b", cmake_args, re.I):
            return word
    return "cpu"


def _code_lines(text: str) -> str:
    """`text` without blank and comment-only lines: a reworded comment changes nothing."""
    return "\n".join(
        line.rstrip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def compile_recipe(dockerfile_text: str, root: Path = ROOT) -> str:
    """The sha256 of what the base is made from: the compile stages and the files they copy."""
    match = PREBUILT_STAGE.search(dockerfile_text)
    if match is None:
        raise ValueError(f"{LLAMACPP_DOCKERFILE} has no `FROM ... AS prebuilt` stage")
    digest = hashlib.sha256(_code_lines(dockerfile_text[: match.start()]).encode())
    for name in RECIPE_FILES:
        digest.update(f"\0{name}\0".encode())
        digest.update(_code_lines((root / name).read_text()).encode())
    return digest.hexdigest()


def base_tag(repo: str, build_args: Mapping[str, str], dockerfile_text: str, recipe: str) -> str:
    """The base's tag: llama-cpp-python's version, the flavour and a hash of what decides it.

    Two builds get the same tag exactly when they compile the same thing: the same
    BASE_IMAGE, CMAKE_ARGS, GGML_CPU_ARGS (flags compared word by word) and recipe.
    """
    version = build_args.get("LLAMA_CPP_PYTHON_VERSION") or dockerfile_arg(
        dockerfile_text, "LLAMA_CPP_PYTHON_VERSION"
    )
    cmake_args = " ".join(build_args.get("CMAKE_ARGS", "").split())
    ggml_cpu_args = build_args.get("GGML_CPU_ARGS")
    if ggml_cpu_args is None:
        ggml_cpu_args = dockerfile_arg(dockerfile_text, "GGML_CPU_ARGS")
    decided_by = {
        "BASE_IMAGE": build_args.get("BASE_IMAGE") or dockerfile_arg(dockerfile_text, "BASE_IMAGE"),
        "CMAKE_ARGS": cmake_args,
        "GGML_CPU_ARGS": " ".join(ggml_cpu_args.split()),
        "LLAMA_CPP_PYTHON_VERSION": version,
        "recipe": recipe,
    }
    digest = hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode()).hexdigest()
    return f"{repo}:{version}-{flavour(cmake_args)}-{digest[:8]}"


def llamacpp_build(settings: Settings) -> ImageBuild:
    """The llama.cpp image's build as the settings describe it (no prebuilt base yet)."""
    return ImageBuild(
        "llamacpp",
        LLAMACPP_DOCKERFILE,
        image_repo(settings.llamacpp_image),
        {
            "BASE_IMAGE": settings.llamacpp_base_image,
            "RUNTIME_IMAGE": settings.llamacpp_runtime_image,
            "CMAKE_ARGS": settings.llamacpp_cmake_args,
        },
    )


def llamacpp_base_tag(build: ImageBuild, root: Path = ROOT) -> str:
    """The tag of `build`'s base: its repository with `-base`, see `base_tag`."""
    text = (root / build.dockerfile).read_text()
    return base_tag(f"{build.repo}-base", build.args(), text, compile_recipe(text, root))


# ---------------------------------------------------------------- building


def build_command(
    cli: str,
    build: ImageBuild,
    tags: Sequence[str],
    *,
    network: str | None = None,
    no_cache: bool = False,
) -> list[str]:
    """The `docker build` command line of `build`, tagged `tags`."""
    command = [cli, "build", "-f", build.dockerfile]
    if build.target:
        command += ["--target", build.target]
    for tag in tags:
        command += ["-t", tag]
    for key, value in build.args().items():
        command += ["--build-arg", f"{key}={value}"]
    if network:
        command += ["--network", network]
    if no_cache:
        command.append("--no-cache")
    command.append(".")
    return command


def docker_build(
    cli: str,
    build: ImageBuild,
    tags: Sequence[str],
    *,
    network: str | None = None,
    no_cache: bool = False,
) -> float:
    """Build `build` with BuildKit (its output shown), tagged `tags`; the seconds it took."""
    command = build_command(cli, build, tags, network=network, no_cache=no_cache)
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    start = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise BuildError(f"building {build.name} failed (see above)")
    return time.monotonic() - start


def pull(cli: str, image: str) -> bool:
    """Pull `image`; False when the registry does not have it or cannot be reached."""
    try:
        done = subprocess.run(
            [cli, "pull", image], capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def tag_image(cli: str, image: str, tag: str) -> None:
    subprocess.run([cli, "tag", image, tag], check=True)


def push(cli: str, tag: str, registry: str) -> str:
    """Tag `tag` under IMAGE_REGISTRY and push it; the name pushed."""
    remote = registry_name(registry, tag)
    tag_image(cli, tag, remote)
    if subprocess.run([cli, "push", remote], check=False).returncode != 0:
        raise BuildError(f"pushing {remote} failed: check IMAGE_REGISTRY and `docker login`")
    print(f"pushed {remote}", flush=True)
    return remote


def ensure_base(
    cli: str,
    build: ImageBuild,
    *,
    registry: str = "",
    network: str | None = None,
) -> tuple[str, str]:
    """The llama.cpp base for `build`, made available locally: (tag, how it came).

    Kept when the tag is here, else pulled from `registry` (IMAGE_REGISTRY) when it has it,
    else built from the `compiled` target.
    """
    tag = llamacpp_base_tag(build)
    if image_present(tag, cli):
        return tag, "already here"
    if registry:
        remote = registry_name(registry, tag)
        start = time.monotonic()
        if pull(cli, remote):
            tag_image(cli, remote, tag)
            return tag, f"pulled from {remote} in {time.monotonic() - start:.0f} s"
    base = ImageBuild("llamacpp base", build.dockerfile, build.repo, build.args(), BASE_TARGET)
    seconds = docker_build(cli, base, [tag], network=network)
    return tag, f"built in {seconds:.0f} s"


def check_prebuilt(cli: str, prebuilt: str, build: ImageBuild) -> None:
    """Warn when a given LLAMACPP_PREBUILT_IMAGE was compiled on another BASE_IMAGE."""
    made_on = image_labels(cli, prebuilt).get("kc-worker.base-image")
    wanted = build.build_args.get("BASE_IMAGE", "")
    if made_on and wanted and made_on != wanted:
        print(
            f"warning: LLAMACPP_PREBUILT_IMAGE {prebuilt} was compiled on {made_on}, "
            f"LLAMACPP_BASE_IMAGE is {wanted}: its venv needs that image's Python",
            file=sys.stderr,
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", choices=["llamacpp", "vllm", "vllm-cpu"], default=[])
    parser.add_argument("--push", action="store_true", help="push to IMAGE_REGISTRY")
    parser.add_argument("--network", help="build network, e.g. host")
    parser.add_argument(
        "--no-base",
        action="store_true",
        help="llamacpp: compile in the image's own build, no prebuilt base",
    )
    args = parser.parse_args()
    os.chdir(ROOT)  # .env and the build context live there
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    cli = buildkit_cli()
    if not docker_answers(cli):
        print(
            "no Docker engine answers: start Docker (or `scripts/docker-env engine` here), "
            "then run this again",
            file=sys.stderr,
        )
        return 1
    registry = settings.image_registry
    if args.push and not registry:
        print("--push needs IMAGE_REGISTRY in .env (e.g. ghcr.io/you)", file=sys.stderr)
        return 2
    version = project_version()
    builds = {
        "llamacpp": llamacpp_build(settings),
        "vllm": ImageBuild(
            "vllm",
            "Dockerfile.vllm",
            image_repo(settings.vllm_local_image),
            {"VLLM_IMAGE": settings.vllm_image, "VLLM_VERSION": settings.vllm_version},
        ),
        "vllm-cpu": ImageBuild(
            "vllm-cpu",
            "Dockerfile.vllm",
            image_repo(settings.vllm_cpu_local_image),
            {"CPU_BASE_IMAGE": settings.vllm_cpu_base_image},
            target="cpu",
        ),
    }
    try:
        for name in args.images or ["llamacpp", "vllm"]:  # vllm-cpu only when asked
            build = builds[name]
            if name == "llamacpp" and not args.no_base:
                prebuilt = settings.llamacpp_prebuilt_image
                if prebuilt:
                    print(f"llama.cpp base: {prebuilt} (LLAMACPP_PREBUILT_IMAGE)", flush=True)
                    check_prebuilt(cli, prebuilt, build)
                else:
                    prebuilt, how = ensure_base(cli, build, registry=registry, network=args.network)
                    print(f"{prebuilt}  {image_size(cli, prebuilt)}  {how}", flush=True)
                    if args.push:
                        push(cli, prebuilt, registry)
                build = ImageBuild(
                    build.name,
                    build.dockerfile,
                    build.repo,
                    build.build_args,
                    extra_args={"PREBUILT_IMAGE": prebuilt},
                )
            tags = [f"{build.repo}:latest", f"{build.repo}:{version}"]
            seconds = docker_build(cli, build, tags, network=args.network)
            print(
                f"{tags[0]}  {image_size(cli, tags[0])}  built in {seconds:.0f} s  "
                f"(also tagged {tags[1]})",
                flush=True,
            )
            if args.push:
                for tag in tags:
                    push(cli, tag, registry)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
