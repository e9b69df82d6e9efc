"""The compose stack for real: images built from our Dockerfiles, `up --wait`, jobs from the host.

Registry images cannot be pulled here, so the bases are local stand-ins
(`scripts/docker-env bases`) passed through the same variables a user would set.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.docker.compose_stack import Stack, new_stack, server_container
from tests.docker.standins import IMAGE, STANDIN_PYTHON
from tests.support.processes import (
    RedisServer,
    run_kcw,
    start_worker,
    stop,
    wait_until,
    worker_env,
)

ROOT = Path(__file__).resolve().parents[2]
FILES = ["docker-compose.yml", "docker-compose.llamacpp.yml"]


@pytest.fixture(scope="module")
def stack(llamacpp_image: str) -> Iterator[Stack]:
    stack = new_stack(
        FILES,
        LLAMACPP_BASE_IMAGE=STANDIN_PYTHON,
        LLAMACPP_IMAGE=IMAGE,
        LLM_START_PERIOD="60s",
        LLM_API_KEY=secrets.token_urlsafe(16),
    )
    # The README's command; the image exists, so compose starts it without building.
    with stack.running():
        yield stack


def test_health_is_ok_and_models_lists_the_model(stack: Stack) -> None:
    health = httpx.get(f"{stack.llm_url}/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    # The stack runs with LLM_API_KEY set: only /health answers without it.
    assert httpx.get(f"{stack.llm_url}/v1/models", timeout=10).status_code == 401
    key = {"Authorization": f"Bearer {stack.env['LLM_API_KEY']}"}
    models = httpx.get(f"{stack.llm_url}/v1/models", headers=key, timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_the_default_engine_is_llama_server_with_slots_and_metrics(stack: Stack) -> None:
    key = {"Authorization": f"Bearer {stack.env['LLM_API_KEY']}"}
    props = httpx.get(f"{stack.llm_url}/props", headers=key, timeout=10).json()
    assert props["total_slots"] == 8
    assert props["default_generation_settings"]["n_ctx"] == 4096  # per slot
    metrics = httpx.get(f"{stack.llm_url}/metrics", headers=key, timeout=10)
    assert "llamacpp:requests_processing" in metrics.text
    logs = stack.compose("logs", "llm-server").stdout
    assert "starting llama-server: 8 slots of 4096 tokens" in logs


def test_services_report_healthy(stack: Stack) -> None:
    for service in ("redis", "llm-server"):
        assert stack.inspect(service)["State"]["Health"]["Status"] == "healthy"


def test_host_worker_gets_a_real_completion(stack: Stack, tmp_path: Path) -> None:
    from tests.support.processes import client_app, submitter

    server = RedisServer(stack.redis_port, stack.env["REDIS_PASSWORD"], None)  # type: ignore[arg-type]
    env = worker_env(server, stack.llm_url, LLM_API_KEY=stack.env["LLM_API_KEY"])
    worker = start_worker(tmp_path, env, "docker")
    app = client_app(server)
    try:
        job = submitter(app)(
            "chat", {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        )
        assert job.successful(), job.result
        assert job.result["text"]
        assert job.result["usage"]["completion_tokens"] > 0
        secrets_ = [stack.env["LLM_API_KEY"], stack.env["REDIS_PASSWORD"]]
        logs = worker.output() + stack.compose("logs").stdout + json.dumps(job.result)
        assert not [secret for secret in secrets_ if secret in logs]
    finally:
        stop(worker.proc)
        app.close()


def test_the_api_key_set_in_env_guards_the_server_end_to_end(stack: Stack, tmp_path: Path) -> None:
    """LLM_API_KEY goes from .env through compose and the launcher to llama-server."""
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"{stack.llm_url}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(url, json=body, headers=wrong, timeout=30).status_code == 401
    right = {"Authorization": f"Bearer {stack.env['LLM_API_KEY']}"}
    assert httpx.post(url, json=body, headers=right, timeout=60).status_code == 200
    # `kcw doctor` with the key: all ready, and neither secret in what it prints.
    server = RedisServer(stack.redis_port, stack.env["REDIS_PASSWORD"], None)  # type: ignore[arg-type]
    env = worker_env(server, stack.llm_url, LLM_API_KEY=stack.env["LLM_API_KEY"])
    done = run_kcw(["doctor"], env, tmp_path)
    out = done.stdout + done.stderr
    assert "[ok]" in out and "LLM server" in out
    assert stack.env["LLM_API_KEY"] not in out and stack.env["REDIS_PASSWORD"] not in out


def test_server_runs_as_non_root_and_logs_the_hardware(stack: Stack) -> None:
    uid = stack.compose("exec", "-T", "llm-server", "id", "-u").stdout.strip()
    assert uid == "999"
    logs = stack.compose("logs", "llm-server").stdout
    assert "no GPU found: running on the CPU" in logs
    assert "GPU acceleration is unavailable" in logs


def test_redis_refuses_a_client_without_the_password(stack: Stack) -> None:
    with pytest.raises(redis.RedisError) as refused:
        stack.redis().set("kcw-test", "1")
    assert "auth" in str(refused.value).lower()
    with pytest.raises(redis.AuthenticationError):
        stack.redis("wrong-password").ping()
    assert stack.redis(stack.env["REDIS_PASSWORD"]).ping()


def test_docker_restarts_a_killed_server(stack: Stack) -> None:
    before = stack.inspect("llm-server")
    os.kill(before["State"]["Pid"], signal.SIGKILL)  # the server process dies, as in a crash

    def restarted() -> bool:
        state = stack.inspect("llm-server")
        return state["RestartCount"] > before["RestartCount"] and state["State"]["Running"]

    wait_until(restarted, 60, "restart after kill")

    def healthy() -> bool:
        try:
            return httpx.get(f"{stack.llm_url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 90, "health after restart")


def test_missing_model_path_serves_the_bundled_default(llamacpp_image: str) -> None:
    with server_container(llamacpp_image, "MODEL_PATH=/models/absent.gguf") as (name, _):
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert "serving the default model" in logs


def test_llama_cpp_pythons_server_is_one_setting_away(llamacpp_image: str) -> None:
    setting = "LLAMACPP_ENGINE=python"
    with server_container(llamacpp_image, setting, "N_CTX=2048") as (_, url):
        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
        props = httpx.get(f"{url}/props", timeout=10).json()
        assert (props["total_slots"], props["default_generation_settings"]["n_ctx"]) == (1, 2048)
        models = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_a_redis_kill_9_keeps_queued_jobs_and_results_by_aof_alone(
    stack: Stack, tmp_path: Path
) -> None:
    """`docker kill -s KILL` on Redis with RDB snapshots off: only the AOF can bring data back.

    The test makes its own jobs: one finished (its result stored), one still queued.
    """
    from tests.support.processes import client_app, submitter

    client = stack.redis(stack.env["REDIS_PASSWORD"])
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.config_set("save", "")  # no RDB snapshot, at shutdown or ever: AOF alone
    server = RedisServer(stack.redis_port, stack.env["REDIS_PASSWORD"], None)  # type: ignore[arg-type]
    env = worker_env(server, stack.llm_url, LLM_API_KEY=stack.env["LLM_API_KEY"])
    app = client_app(server)
    chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    try:
        worker = start_worker(tmp_path, env, "before-kill")
        finished = submitter(app)("chat", chat)
        stop(worker.proc)
        assert finished.successful(), finished.result
        queued = app.send_task("kcw.chat", args=[chat])  # no worker now: it stays queued
        time.sleep(1.5)  # appendfsync everysec
        stack.compose("kill", "-s", "KILL", "redis")
        stack.compose("up", "-d", "--wait")

        after = stack.redis(stack.env["REDIS_PASSWORD"])
        stored = json.loads(after.get(f"celery-task-meta-{finished.id}") or "{}")
        assert stored.get("status") == "SUCCESS", "the finished job's result was lost"
        assert after.llen("kcw") == 1, "the queued job was lost"
        worker = start_worker(tmp_path, env, "after-kill")
        try:
            assert queued.get(timeout=120)["text"]
        finally:
            stop(worker.proc)
    finally:
        app.close()
