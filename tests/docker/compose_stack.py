"""A compose project of the Docker tier: its own name, network, ports and password."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.docker.standins import STANDIN_REDIS
from tests.support.processes import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
# Compose projects and containers of the Docker tier are named with these prefixes, so that
# everything the tier creates can be found and removed, also after an interrupted run.
PREFIXES = ("kcwtest", "kcwup")
PROJECT_LABEL = "com.docker.compose.project"


def inspect_container(ident: str) -> dict[str, Any]:
    """`docker inspect` of one container."""
    out = subprocess.run(["docker", "inspect", ident], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout)[0])


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    redis_port: int
    llm_port: int
    files: list[str]

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "--project-directory", str(ROOT), "--env-file", os.devnull]
        for name in self.files:
            command += ["-f", str(ROOT / name)]
        return subprocess.run(
            [*command, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
        )

    @contextmanager
    def running(self) -> Iterator[Stack]:
        """`up -d --wait` (failing with the services' logs), then `down -v` at the end."""
        try:
            up = self.compose("up", "-d", "--wait", check=False)
            if up.returncode != 0:
                logs = self.compose("logs", check=False).stdout[-4000:]
                raise AssertionError(f"compose up failed:\n{up.stdout}{up.stderr}{logs}")
            yield self
        finally:
            self.compose("down", "-v", check=False)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        return inspect_container(self.container(service))

    def redis(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=password, socket_timeout=5)


def new_stack(files: list[str], **env: str) -> Stack:
    """A fresh project on free ports, with a random Redis password, on the stand-in Redis."""
    tag = secrets.token_hex(3)
    redis_port, llm_port = free_port(), free_port()
    full = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"}
    full.update(
        COMPOSE_PROJECT_NAME=f"kcwtest{tag}",
        WORKER_NETWORK=f"kcwtest{tag}",
        REDIS_PASSWORD=secrets.token_urlsafe(16),
        REDIS_PORT=str(redis_port),
        LLM_PORT=str(llm_port),
        REDIS_IMAGE=STANDIN_REDIS,
        **env,
    )
    return Stack(f"kcwtest{tag}", full, redis_port, llm_port, files)


def _ids(kind: str, *filters: str) -> list[tuple[str, str]]:
    """(id, compose project) of each docker `kind` (container, network, volume) found."""
    listing = {"container": ["ps", "-a"], "network": ["network", "ls"], "volume": ["volume", "ls"]}
    key = "Name" if kind == "volume" else "ID"
    template = f'{{{{.{key}}}}} {{{{.Label "{PROJECT_LABEL}"}}}}'
    args = ["docker", *listing[kind], "--format", template]
    for value in filters:
        args += ["--filter", value]
    out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60).stdout
    pairs = [line.partition(" ") for line in out.splitlines() if line.strip()]
    return [(ident, project) for ident, _, project in pairs]


def leftovers(prefixes: tuple[str, ...] = PREFIXES) -> dict[str, list[str]]:
    """Containers, networks and volumes of the tier's projects, or named by it, still there."""
    found: dict[str, list[str]] = {}
    for kind in ("container", "network", "volume"):
        labelled = _ids(kind, f"label={PROJECT_LABEL}")
        ids = [i for i, project in labelled if project.startswith(prefixes)]
        if kind == "container":
            ids += [i for i, _ in _ids(kind, *(f"name={p}-" for p in prefixes))]
        if ids:
            found[kind] = sorted(set(ids))
    return found


def remove_leftovers(prefixes: tuple[str, ...] = PREFIXES) -> dict[str, list[str]]:
    """Remove what `leftovers` finds (containers first, so their networks and volumes go)."""
    found = leftovers(prefixes)
    commands = {
        "container": ["docker", "rm", "-f", "-v"],
        "network": ["docker", "network", "rm"],
        "volume": ["docker", "volume", "rm", "-f"],
    }
    for kind in ("container", "network", "volume"):
        if found.get(kind):
            subprocess.run([*commands[kind], *found[kind]], capture_output=True, check=False)
    return found


def remove_project(project: str) -> None:
    """Everything of one compose project: `down -v` without its files, by its label."""
    remove_leftovers((project,))


@dataclass
class Project:
    """A project folder like a clone's (files linked from this checkout) with its own .env,
    which compose reads as a user's would; the environment carries no stack keys."""

    root: Path
    name: str
    settings: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        stack_keys = ("REDIS_", "LLM_", "KCW_", "COMPOSE_", "LLAMACPP_", "MODEL_", "WORKER_")
        return {k: v for k, v in os.environ.items() if not k.startswith(stack_keys)}

    def write_env(self, **changes: str) -> None:
        self.settings.update(changes)
        lines = [f"{key}={value}" for key, value in self.settings.items()]
        (self.root / ".env").write_text("\n".join(lines) + "\n")

    def inspect(self, files: list[str], service: str) -> dict[str, Any]:
        """`docker inspect` of the container of `service` in the layering `files`."""
        return inspect_container(self.compose(files, "ps", "-q", service).stdout.strip())

    def compose(self, files: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose"]
        for name in files:
            command += ["-f", name]
        return subprocess.run(
            [*command, *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )


def new_project(tmp: Path, copied: tuple[str, ...] = (), **settings: str) -> Project:
    """A project in `tmp` on free ports with a random Redis password and the stand-in Redis;
    the paths in `copied` (e.g. docker/llamacpp) are copies, so a test may change them."""
    items = [*ROOT.glob("docker-compose*.yml"), ROOT / "docker", ROOT / "models", ROOT / "scripts"]
    for item in items:
        (tmp / item.name).symlink_to(item)
    for path in copied:  # e.g. docker/llamacpp: docker/ a folder of links, llamacpp/ a copy
        top, sub = path.split("/", 1)
        (tmp / top).unlink()
        (tmp / top).mkdir()
        for child in (ROOT / top).iterdir():
            if child.name != sub:
                (tmp / top / child.name).symlink_to(child)
        shutil.copytree(ROOT / path, tmp / path)
    tag = secrets.token_hex(3)
    redis_port, llm_port = free_port(), free_port()
    project = Project(tmp, f"kcwup{tag}", {})
    project.write_env(
        COMPOSE_PROJECT_NAME=project.name,
        WORKER_NETWORK=project.name,
        REDIS_PASSWORD=secrets.token_urlsafe(12),
        REDIS_PORT=str(redis_port),
        LLM_PORT=str(llm_port),
        LLM_SERVER_URL=f"http://127.0.0.1:{llm_port}",
        REDIS_IMAGE=STANDIN_REDIS,
        LLAMACPP_IMAGE="kc-worker-llamacpp:latest",
        LLM_START_PERIOD="60s",
        **settings,
    )
    return project


@contextmanager
def server_container(
    image: str, *env: str, cli: str = "docker", timeout: float = 120
) -> Iterator[tuple[str, str]]:
    """`docker run` the image alone with these -e settings; yields its name and URL when ready."""
    port = free_port()
    name = f"kcwtest-server-{secrets.token_hex(3)}"
    flags = [arg for setting in env for arg in ("-e", setting)]
    subprocess.run(
        [cli, "run", "-d", "--name", name, *flags, "-p", f"127.0.0.1:{port}:8000", image],
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

        wait_until(ready, timeout, f"{name} ready")
        yield name, url
    finally:
        subprocess.run([cli, "rm", "-f", name], capture_output=True, check=False)
