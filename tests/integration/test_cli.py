"""`kcw doctor`, `kcw submit` and `kcw result` as a user runs them, against the real stack."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    LLMServer,
    RedisServer,
    Worker,
    free_port,
    run_kcw,
    start_launcher,
    worker_env,
)


@pytest.fixture()
def env(redis_server: RedisServer, llm_server: LLMServer, worker: Worker) -> dict[str, str]:
    return worker_env(redis_server, llm_server.url)


def test_doctor_reports_a_healthy_stack(env: dict[str, str], tmp_path: Path) -> None:
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("[ok]") and "Redis" in line for line in lines)
    llm = next(line for line in lines if "LLM server" in line)
    assert llm.startswith("[ok]")
    assert "backend llamacpp" in llm
    assert "model SmolLM2-135M-Instruct.Q4_1" in llm
    assert "context 4096 tokens" in llm
    assert "(llama-server)" in llm and "8 slots" in llm
    workers = next(line for line in lines if "Workers" in line)
    assert workers.startswith("[ok]") and "kcw" in workers
    assert env["REDIS_PASSWORD"] not in done.stdout + done.stderr


def test_doctor_redis_stopped(env: dict[str, str], tmp_path: Path) -> None:
    env["REDIS_PORT"] = str(free_port())
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 1
    assert "[FAIL] Redis" in done.stdout
    assert "not reachable" in done.stdout
    assert "fix: start it with `make up`, or set REDIS_HOST/REDIS_PORT" in done.stdout


def test_doctor_wrong_redis_password(env: dict[str, str], tmp_path: Path) -> None:
    env["REDIS_PASSWORD"] = "not-the-password"
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 1
    assert "password refused" in done.stdout
    assert "fix: set REDIS_PASSWORD" in done.stdout
    assert "not-the-password" not in done.stdout


def test_doctor_llm_server_stopped(env: dict[str, str], tmp_path: Path) -> None:
    env["LLM_SERVER_URL"] = f"http://127.0.0.1:{free_port()}"
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if "LLM server" in line)
    assert line.startswith("[FAIL]") and "not reachable" in line
    assert "fix: start it with `make up`" in done.stdout


@pytest.fixture()
def loading_server(tmp_path: Path) -> Iterator[LLMServer]:
    fifo = tmp_path / "never.gguf"
    os.mkfifo(fifo)  # the loader blocks opening it: the server stays "loading"
    server = start_launcher(tmp_path, model=fifo, wait=False)
    yield server
    server.stop()


def test_doctor_server_still_loading(
    env: dict[str, str], tmp_path: Path, loading_server: LLMServer
) -> None:
    env["LLM_SERVER_URL"] = loading_server.url
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 1
    line = next(line for line in done.stdout.splitlines() if "LLM server" in line)
    assert line.startswith("[wait]") and "still loading" in line
    assert "answers 200 once the model is loaded" in done.stdout


def test_submit_wait_then_result(env: dict[str, str], tmp_path: Path) -> None:
    done = run_kcw(["submit", "chat", "Say hello.", "--max-tokens", "12", "--wait"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["state"] == "SUCCESS"
    assert shown["result"]["text"]
    assert shown["result"]["usage"]["completion_tokens"] > 0

    again = run_kcw(["result", shown["id"]], env, tmp_path)
    assert again.returncode == 0
    assert json.loads(again.stdout)["result"] == shown["result"]


def test_submit_prints_the_id_and_classify_from_a_file(env: dict[str, str], tmp_path: Path) -> None:
    text = tmp_path / "review.txt"
    text.write_text("Terrible service, I want a refund.")
    done = run_kcw(["submit", "classify", f"@{text}", "--labels", "happy,angry"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert len(job_id) == 36
    shown = run_kcw(["result", job_id, "--wait", "--timeout", "120"], env, tmp_path)
    assert shown.returncode == 0, shown.stdout
    assert json.loads(shown.stdout)["result"]["label"] in {"happy", "angry"}


def test_submit_bad_schema_shows_a_failed_job(env: dict[str, str], tmp_path: Path) -> None:
    done = run_kcw(["submit", "extract", "Ann is 3", "--schema", "{oops", "--wait"], env, tmp_path)
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "InvalidJobInput"
    assert "schema is not valid JSON" in error["message"]


def test_submit_with_redis_down_says_how_to_fix(env: dict[str, str], tmp_path: Path) -> None:
    env["REDIS_PORT"] = str(free_port())
    done = run_kcw(["submit", "chat", "hi"], env, tmp_path, timeout=30)
    assert done.returncode == 1
    assert "fix: start it with `make up`" in done.stderr


def test_bad_setting_names_the_key_and_value(env: dict[str, str], tmp_path: Path) -> None:
    env["LLM_TIMEOUT"] = "soon"
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 2
    assert "LLM_TIMEOUT='soon'" in done.stderr


def test_worker_refuses_to_start_on_a_bad_setting(
    redis_server: RedisServer, llm_server: LLMServer, tmp_path: Path
) -> None:
    import subprocess

    from tests.support.processes import BIN

    env = worker_env(redis_server, llm_server.url, WORKER_POOL="gevent-ish")
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "worker", "worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "WORKER_POOL='gevent-ish'" in done.stdout + done.stderr


def test_models_pull_offline_says_it_needs_the_network(tmp_path: Path) -> None:
    # The hub endpoint points at a closed local port: no traffic leaves this machine.
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "HF_HUB_ETAG_TIMEOUT": "2",
    }
    done = run_kcw(
        ["models", "pull", "HuggingFaceTB/SmolLM2-135M-Instruct", "--dir", "hf"],
        env,
        tmp_path,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pulling needs network access" in done.stderr
    assert "make models-hf" in done.stderr


def test_doctor_detects_vllm_and_shows_its_load(
    env: dict[str, str], tmp_path: Path, vllm_server: LLMServer
) -> None:
    env["LLM_SERVER_URL"] = vllm_server.url
    done = run_kcw(["doctor"], env, tmp_path)
    line = next(line for line in done.stdout.splitlines() if "LLM server" in line)
    assert line.startswith("[ok]"), done.stdout
    assert "backend vllm" in line
    assert "model SmolLM2-135M-Instruct" in line
    assert "context 4096 tokens" in line
    assert "running" in line and "KV cache" in line


def test_doctor_checks_every_server_in_the_list(env: dict[str, str], tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {**env, "LLM_SERVER_URL": f"{env['LLM_SERVER_URL']},{dead}"}
    done = run_kcw(["doctor"], env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    first = next(line for line in lines if "LLM server 1" in line)
    second = next(line for line in lines if "LLM server 2" in line)
    assert first.startswith("[ok]"), done.stdout
    assert second.startswith("[FAIL]") and dead in second, done.stdout
