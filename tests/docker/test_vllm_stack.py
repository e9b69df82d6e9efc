"""The vLLM compose stack on the CPU: Dockerfile.vllm's `cpu` target, `up --wait`, host jobs.

    docker compose -f docker-compose.yml -f docker-compose.vllm.yml \\
        -f docker-compose.vllm.cpu.yml up -d --wait
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.docker.compose_stack import Stack, new_stack
from tests.support.processes import (
    RedisServer,
    client_app,
    start_worker,
    stop,
    submitter,
    worker_env,
)
from worker.jobs.extract import PERSON_SCHEMA
from worker.jobs.summarize import long_document

FILES = ["docker-compose.yml", "docker-compose.vllm.yml", "docker-compose.vllm.cpu.yml"]


@pytest.fixture(scope="module")
def stack(vllm_cpu_image: str) -> Iterator[Stack]:
    stack = new_stack(FILES, VLLM_CPU_LOCAL_IMAGE=vllm_cpu_image, LLM_START_PERIOD="300s")
    with stack.running():
        yield stack


def test_health_and_models_through_the_compose_port(stack: Stack) -> None:
    health = httpx.get(f"{stack.llm_url}/health", timeout=10)
    assert health.status_code == 200
    models = httpx.get(f"{stack.llm_url}/v1/models", timeout=10).json()
    (model,) = models["data"]
    assert model["owned_by"] == "vllm"
    assert model["id"] == "/models/SmolLM2-135M-Instruct"
    assert model["max_model_len"] == 4096


def test_no_gpu_is_reserved(stack: Stack) -> None:
    config = stack.compose("config", "--format", "json").stdout
    assert '"driver": "nvidia"' not in config


def test_host_worker_runs_every_job_kind_against_vllm(stack: Stack, tmp_path: Path) -> None:
    server = RedisServer(stack.redis_port, stack.env["REDIS_PASSWORD"], None)  # type: ignore[arg-type]
    worker = start_worker(tmp_path, worker_env(server, stack.llm_url), "vllm-docker")
    app = client_app(server)
    submit = submitter(app)
    try:
        chat = submit("chat", {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8})
        assert chat.successful(), chat.result
        assert chat.result["usage"]["completion_tokens"] > 0

        extract = submit(
            "extract", {"text": "Ann Lee, 41, lives in Oslo.", "schema": PERSON_SCHEMA}
        )
        assert extract.successful(), extract.result
        jsonschema.validate(extract.result["data"], PERSON_SCHEMA)

        labels = ["positive", "negative", "neutral"]
        classify = submit("classify", {"text": "Worst purchase ever.", "labels": labels})
        assert classify.successful(), classify.result
        assert classify.result["label"] in labels

        summary = submit("summarize", {"text": long_document(), "max_tokens": 64}, timeout=600)
        assert summary.successful(), summary.result
        assert summary.result["chunks"] >= 2
    finally:
        stop(worker.proc)
        app.close()


def test_the_prod_overlay_runs_vllm_read_only(vllm_cpu_image: str) -> None:
    """vLLM writes its caches only where the prod overlay gives it tmpfs: it loads and answers."""
    prod = new_stack(
        [*FILES, "docker-compose.prod.yml"],
        VLLM_CPU_LOCAL_IMAGE=vllm_cpu_image,
        LLM_START_PERIOD="300s",
    )
    with prod.running():
        config = prod.inspect("llm-server")["HostConfig"]
        assert config["ReadonlyRootfs"] is True and config["CapDrop"] == ["ALL"]
        models = httpx.get(f"{prod.llm_url}/v1/models", timeout=10).json()
        body = {
            "model": models["data"][0]["id"],
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
        }
        reply = httpx.post(f"{prod.llm_url}/v1/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
