"""A compose project of the Docker tier: its own name, network, ports and password."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.docker.standins import STANDIN_REDIS
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


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
        out = subprocess.run(
            ["docker", "inspect", self.container(service)],
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(out.stdout)[0])

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
