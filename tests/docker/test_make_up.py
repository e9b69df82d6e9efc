"""`kcw up` / `kcw down` (what `make up` / `make down` run) where a Docker engine answers."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
import pytest

from tests.docker.compose_stack import remove_project
from tests.support.processes import free_port, run_kcw

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path, llamacpp_image: str) -> Path:
    """A project folder like a clone's (files linked from this checkout), with no .env."""
    items = [*ROOT.glob("docker-compose*.yml"), ROOT / "docker", ROOT / "models", ROOT / "scripts"]
    for item in items:
        (tmp_path / item.name).symlink_to(item)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    tag = secrets.token_hex(3)
    redis_port, llm_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "LLM_", "KCW_", "COMPOSE_", "LLAMACPP_"))
    }
    env.update(
        COMPOSE_PROJECT_NAME=f"kcwup{tag}",
        WORKER_NETWORK=f"kcwup{tag}",
        REDIS_PASSWORD=secrets.token_urlsafe(12),
        REDIS_PORT=str(redis_port),
        LLM_PORT=str(llm_port),
        LLM_SERVER_URL=f"http://127.0.0.1:{llm_port}",
        LLAMACPP_IMAGE="kc-worker-llamacpp:latest",
        **extra,
    )
    return env


@pytest.mark.timeout(900)
def test_make_up_uses_compose_and_prints_the_command(project: Path) -> None:
    env = _env(REDIS_IMAGE="local/redis:7-standin")
    try:
        up = run_kcw(["up"], env, project, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "hardware: no GPU: the llama.cpp server runs on the CPU" in up.stdout
        assert (
            "running: docker compose -f docker-compose.yml -f docker-compose.llamacpp.yml "
            "up -d --wait" in up.stdout
        )
        health = httpx.get(f"{env['LLM_SERVER_URL']}/health", timeout=10)
        assert health.json() == {"status": "ok"}
    finally:
        down = run_kcw(["down"], env, project, timeout=300)
        remove_project(env["COMPOSE_PROJECT_NAME"])  # `down` keeps the Redis data volume
    assert down.returncode == 0, down.stdout + down.stderr
    assert "docker-compose.llamacpp.yml down" in down.stdout


def test_make_up_offline_says_so_and_runs_the_local_stack(project: Path) -> None:
    # The real upstream Redis image: present nowhere here, and the registry is unreachable.
    env = _env(REDIS_IMAGE="redis:7.4.2-alpine")
    try:
        up = run_kcw(["up"], env, project, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "cannot pull redis:7.4.2-alpine (offline?)" in up.stdout
        assert "scripts/docker-env bases" in up.stdout
        assert "KCW_STACK=local" in up.stdout
        assert "started redis-server" in up.stdout
        health = httpx.get(f"{env['LLM_SERVER_URL']}/health", timeout=10)
        assert health.json() == {"status": "ok"}
    finally:
        run_kcw(["down"], env, project, timeout=120)
        remove_project(env["COMPOSE_PROJECT_NAME"])


@pytest.mark.timeout(900)
def test_make_up_follows_compose_file_to_the_vllm_layering(
    project: Path, vllm_cpu_image: str
) -> None:
    files = "docker-compose.yml:docker-compose.vllm.yml:docker-compose.vllm.cpu.yml"
    env = _env(
        REDIS_IMAGE="local/redis:7-standin",
        COMPOSE_FILE=files,
        VLLM_CPU_LOCAL_IMAGE=vllm_cpu_image,
    )
    try:
        up = run_kcw(["up"], env, project, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "-f " + " -f ".join(files.split(":")) + " up -d --wait" in up.stdout
        assert "backend vllm" in up.stdout
        models = httpx.get(f"{env['LLM_SERVER_URL']}/v1/models", timeout=10).json()
        assert models["data"][0]["owned_by"] == "vllm"
    finally:
        down = run_kcw(["down"], env, project, timeout=300)
        remove_project(env["COMPOSE_PROJECT_NAME"])
    assert "docker-compose.vllm.cpu.yml down" in down.stdout
