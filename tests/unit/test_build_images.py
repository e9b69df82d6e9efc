"""scripts/build_images.py: the llama.cpp base's tag, and which builds each setting leads to."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import image_builds
from tests.support.scripts import load_script
from worker.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile.llamacpp").read_text()


bi = load_script("build_images")
RECIPE = bi.compile_recipe(DOCKERFILE)
CPU = {"BASE_IMAGE": "python:3.11.14-slim-bookworm"}


def tag(**args: str) -> str:
    return str(bi.base_tag("kc-worker-llamacpp-base", {**CPU, **args}, DOCKERFILE, RECIPE))


def test_the_tag_names_the_llama_cpp_version_and_the_flavour() -> None:
    assert re.fullmatch(r"kc-worker-llamacpp-base:0\.3\.36-cpu-[0-9a-f]{8}", tag())
    assert ":0.3.36-cuda-" in tag(CMAKE_ARGS="-DGGML_CUDA=on")
    assert ":0.3.36-rocm-" in tag(CMAKE_ARGS="-DGGML_HIP=ON -DAMDGPU_TARGETS=gfx1100")
    assert ":0.3.36-cpu-" in tag(CMAKE_ARGS="-DGGML_CUDA=off")


def test_the_dockerfile_pins_the_version_llama_server_env_builds() -> None:
    pinned = re.search(
        r"^LLAMA_CPP_PYTHON_VERSION=(\S+)$", (ROOT / "scripts/llama-server-env").read_text(), re.M
    )
    assert pinned is not None
    assert bi.dockerfile_arg(DOCKERFILE, "LLAMA_CPP_PYTHON_VERSION") == pinned.group(1)


def test_the_tag_changes_with_what_is_compiled_and_only_with_that() -> None:
    assert tag() == tag(CMAKE_ARGS="")  # the Dockerfile's own defaults
    assert tag() == tag(GGML_CPU_ARGS=bi.dockerfile_arg(DOCKERFILE, "GGML_CPU_ARGS"))
    assert tag(CMAKE_ARGS="-DA=1  -DB=2") == tag(CMAKE_ARGS=" -DA=1 -DB=2 ")
    assert tag() == tag(RUNTIME_IMAGE="nvidia/cuda:12.6.3-runtime-ubuntu24.04")
    changed = {
        tag(BASE_IMAGE="local/python-base:bookworm"),
        tag(CMAKE_ARGS="-DGGML_BLAS=ON"),
        tag(GGML_CPU_ARGS="-DGGML_NATIVE=ON"),
    }
    assert len(changed) == 3 and tag() not in changed


def test_the_recipe_is_the_compile_stages_and_their_scripts_not_comments() -> None:
    runtime = DOCKERFILE.index("AS prebuilt")
    reworded = DOCKERFILE.replace("# ---- builder:", "# ---- the builder stage:")
    assert reworded != DOCKERFILE and bi.compile_recipe(reworded) == RECIPE
    runtime_changed = DOCKERFILE[:runtime] + DOCKERFILE[runtime:].replace("curl", "wget")
    assert bi.compile_recipe(runtime_changed) == RECIPE
    compile_changed = DOCKERFILE.replace("build-essential cmake", "build-essential cmake ninja")
    assert bi.compile_recipe(compile_changed) != RECIPE


def test_image_repo_keeps_a_registry_port() -> None:
    assert bi.image_repo("kc-worker-llamacpp:latest") == "kc-worker-llamacpp"
    assert bi.image_repo("localhost:5000/team/llamacpp:1.0") == "localhost:5000/team/llamacpp"
    assert bi.image_repo("localhost:5000/team/llamacpp") == "localhost:5000/team/llamacpp"


class FakeDocker:
    """Stands in for the docker calls of build_images.main and records them."""

    def __init__(self, here: set[str], pullable: set[str]) -> None:
        self.here, self.pullable = set(here), pullable
        self.builds: list[tuple[str | None, list[str], dict[str, str]]] = []
        self.pulled: list[str] = []
        self.pushed: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
        monkeypatch.setattr(
            bi, "load_settings", lambda cls: load_settings(Settings, _env_file=None, **settings)
        )
        monkeypatch.setattr(bi, "docker_answers", lambda cli: True)
        monkeypatch.setattr(bi, "image_present", lambda image, cli: image in self.here)
        monkeypatch.setattr(bi, "image_size", lambda cli, image: "1 MB")
        monkeypatch.setattr(bi, "image_labels", lambda cli, image: {})
        monkeypatch.setattr(bi, "docker_build", self.build)
        monkeypatch.setattr(bi, "pull", self.pull)
        monkeypatch.setattr(bi, "push", lambda cli, image, registry: self.pushed.append(image))
        monkeypatch.setattr(bi, "tag_image", lambda cli, image, tag: self.here.add(tag))

    def build(self, cli: str, build: Any, tags: list[str], **_: Any) -> float:
        self.builds.append((build.target, list(tags), build.args()))
        self.here.update(tags)
        return 1.0

    def pull(self, cli: str, image: str) -> bool:
        self.pulled.append(image)
        return image in self.pullable


def run_main(monkeypatch: pytest.MonkeyPatch, fake: FakeDocker, *argv: str, **settings: Any) -> int:
    fake.install(monkeypatch, **settings)
    monkeypatch.setattr(sys, "argv", ["build_images.py", "llamacpp", *argv])
    return int(bi.main())


def base_of(**settings: Any) -> str:
    return str(
        bi.llamacpp_base_tag(bi.llamacpp_build(load_settings(Settings, _env_file=None, **settings)))
    )


def test_the_base_is_built_once_then_the_image_from_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDocker(here=set(), pullable=set())
    assert run_main(monkeypatch, fake) == 0
    base = base_of()
    (target, tags, args), (target2, tags2, args2) = fake.builds
    assert (target, tags) == ("compiled", [base]) and "PREBUILT_IMAGE" not in args
    assert target2 is None and tags2[0] == "kc-worker-llamacpp:latest"
    assert args2["PREBUILT_IMAGE"] == base
    fake.builds.clear()
    assert run_main(monkeypatch, fake) == 0  # the base is here now: only the image
    assert [t for t, _, _ in fake.builds] == [None]


def test_a_base_in_the_registry_is_pulled_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    remote = f"ghcr.io/team/{base_of()}"
    fake = FakeDocker(here=set(), pullable={remote})
    assert run_main(monkeypatch, fake, image_registry="ghcr.io/team/") == 0
    assert fake.pulled == [remote]
    assert [args["PREBUILT_IMAGE"] for _, _, args in fake.builds] == [base_of()]


def test_push_pushes_the_base_too(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDocker(here=set(), pullable=set())
    assert run_main(monkeypatch, fake, "--push", image_registry="ghcr.io/team") == 0
    version = bi.project_version()
    assert fake.pushed == [base_of(), "kc-worker-llamacpp:latest", f"kc-worker-llamacpp:{version}"]


def test_a_given_prebuilt_image_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDocker(here=set(), pullable=set())
    given = "ghcr.io/team/kc-worker-llamacpp-base:0.3.36-cpu-0123abcd"
    assert (
        run_main(
            monkeypatch, fake, "--push", image_registry="r.io/me", llamacpp_prebuilt_image=given
        )
        == 0
    )
    assert [(t, args["PREBUILT_IMAGE"]) for t, _, args in fake.builds] == [(None, given)]
    assert given not in fake.pushed and not fake.pulled


def test_no_base_is_one_build_that_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDocker(here=set(), pullable=set())
    assert run_main(monkeypatch, fake, "--no-base") == 0
    assert [(t, "PREBUILT_IMAGE" in args) for t, _, args in fake.builds] == [(None, False)]


def test_the_readme_build_times_are_the_committed_results_rendered() -> None:
    path = image_builds.newest()
    data = json.loads(path.read_text())
    table = image_builds.render(data, path.relative_to(ROOT).as_posix())
    readme = (ROOT / "README.md").read_text()
    assert f"{image_builds.START}\n{table}{image_builds.END}" in readme, (
        "README.md's build-time table differs from the newest bench/results/image-builds file: "
        "run `.venv/bin/python -m bench.image_builds --table --write`"
    )
    builds, ratios = data["builds"], data["ratios"]
    assert ratios["warm/cold"] == round(builds["warm"]["seconds"] / builds["cold"]["seconds"], 4)
    assert not builds["from_base"]["compile_stages_run"]
