"""Limits, the prod and dev overlays, MODEL_PATH, and the two limit cases, on real containers.

Every project is named `kcwup<tag>` or `kcwtest<tag>` and removed with its volumes at the end
of its test (and by the tier's sweep if a test is interrupted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docker.compose_stack import Project, Stack, new_project, new_stack, remove_project
from tests.docker.standins import IMAGE, STANDIN_PYTHON
from tests.support.processes import (
    RedisServer,
    client_app,
    run_kcw,
    start_worker,
    stop,
    submitter,
    wait_until,
    worker_env,
)

ROOT = Path(__file__).resolve().parents[2]
LLAMACPP = ["docker-compose.yml", "docker-compose.llamacpp.yml"]
DEFAULT_GGUF = ROOT / "models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}


@pytest.fixture()
def project(tmp_path: Path, llamacpp_image: str) -> Iterator[Project]:
    made = new_project(tmp_path)
    try:
        yield made
    finally:
        remove_project(made.name)


def _up(project: Project, files: list[str]) -> None:
    done = project.compose(files, "up", "-d", "--wait")
    logs = "" if done.returncode == 0 else project.compose(files, "logs").stdout[-4000:]
    assert done.returncode == 0, done.stdout + done.stderr + logs


def _host_job(redis_port: int, password: str, llm_url: str, tmp: Path) -> dict[str, object]:
    """A chat job from a worker on the host, through the stack's Redis and LLM server."""
    server = RedisServer(redis_port, password, None)  # type: ignore[arg-type]
    worker = start_worker(tmp, worker_env(server, llm_url), f"host-{redis_port}")
    app = client_app(server)
    try:
        job = submitter(app)("chat", CHAT)
        assert job.successful(), job.result
        return dict(job.result)
    finally:
        stop(worker.proc)
        app.close()


def test_limits_and_reservations_follow_env(project: Project) -> None:
    project.write_env(
        REDIS_CPU_LIMIT="0.5",
        REDIS_MEMORY_LIMIT="96m",
        REDIS_MEMORY_RESERVATION="32m",
        LLM_CPU_LIMIT="1.5",
        LLM_MEMORY_LIMIT="2g",
        LLM_MEMORY_RESERVATION="256m",
    )
    _up(project, LLAMACPP)
    redis_host = project.inspect(LLAMACPP, "redis")["HostConfig"]
    server_host = project.inspect(LLAMACPP, "llm-server")["HostConfig"]
    assert (redis_host["NanoCpus"], redis_host["Memory"]) == (5 * 10**8, 96 << 20)
    assert redis_host["MemoryReservation"] == 32 << 20
    assert (server_host["NanoCpus"], server_host["Memory"]) == (15 * 10**8, 2 << 30)
    assert server_host["MemoryReservation"] == 256 << 20
    # REDIS_MAXMEMORY=auto: three quarters of the limit, so Redis refuses before the kernel kills.
    client = RedisServer(
        int(project.settings["REDIS_PORT"]),
        project.settings["REDIS_PASSWORD"],
        None,  # type: ignore[arg-type]
    ).client()
    assert int(client.config_get("maxmemory")["maxmemory"]) == (96 << 20) * 3 // 4
    client.close()

    project.write_env(REDIS_MEMORY_LIMIT="128m", LLM_MEMORY_LIMIT="3g", LLM_CPU_LIMIT="1")
    _up(project, LLAMACPP)  # compose recreates what changed
    redis_host = project.inspect(LLAMACPP, "redis")["HostConfig"]
    server_host = project.inspect(LLAMACPP, "llm-server")["HostConfig"]
    assert redis_host["Memory"] == 128 << 20
    assert (server_host["NanoCpus"], server_host["Memory"]) == (10**9, 3 << 30)


def test_the_prod_overlay_runs_read_only_and_serves_a_host_worker(
    tmp_path: Path, llamacpp_image: str
) -> None:
    stack = new_stack(
        [*LLAMACPP, "docker-compose.prod.yml"],
        LLAMACPP_BASE_IMAGE=STANDIN_PYTHON,
        LLAMACPP_IMAGE=IMAGE,
        LLM_START_PERIOD="60s",
    )
    with stack.running():
        for service in ("redis", "llm-server"):
            config = stack.inspect(service)["HostConfig"]
            assert config["ReadonlyRootfs"] is True, service
            assert config["CapDrop"] == ["ALL"], service
            assert "no-new-privileges:true" in config["SecurityOpt"], service
            assert config["LogConfig"] == {
                "Type": "json-file",
                "Config": {"max-file": "5", "max-size": "10m"},
            }
            write = stack.compose("exec", "-T", service, "touch", "/kcw-probe", check=False)
            assert write.returncode != 0 and "Read-only file system" in write.stderr, service
        networks = stack.inspect("redis")["NetworkSettings"]["Networks"]
        internal = [n for n in networks if n.endswith("-internal")]
        assert len(networks) == 2 and internal, networks
        detail = subprocess.run(
            ["docker", "network", "inspect", internal[0]], capture_output=True, text=True
        )
        assert json.loads(detail.stdout)[0]["Internal"] is True
        result = _host_job(stack.redis_port, stack.env["REDIS_PASSWORD"], stack.llm_url, tmp_path)
        assert result["text"]


def test_the_dev_overlay_picks_up_a_changed_launcher_on_restart(
    tmp_path: Path, llamacpp_image: str
) -> None:
    project = new_project(tmp_path, copied=("docker/llamacpp",))
    files = [*LLAMACPP, "docker-compose.dev.yml"]
    try:
        _up(project, files)
        image = project.inspect(files, "llm-server")["Image"]
        logs = project.compose(files, "logs", "llm-server").stdout
        assert "verbosity = 4" in logs, "llama-server logs at debug level in the dev overlay"
        launcher = tmp_path / "docker/llamacpp/launcher.py"
        mark = f"launcher edited at {time.time_ns()}"
        text = launcher.read_text()
        launcher.write_text(
            text.replace(
                "def main() -> int:\n", f"def main() -> int:\n    print({mark!r}, flush=True)\n", 1
            )
        )

        restarted = project.compose(files, "restart", "llm-server")
        assert restarted.returncode == 0, restarted.stderr
        url = project.settings["LLM_SERVER_URL"]
        wait_until(lambda: _healthy(url), 90, "llm-server after restart")

        assert mark in project.compose(files, "logs", "llm-server").stdout
        assert project.inspect(files, "llm-server")["Image"] == image, "no build happened"
    finally:
        remove_project(project.name)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _served(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]


def _second_model(root: Path) -> None:
    """models/gguf/ of the project holds the default model and a second file, second.gguf."""
    (root / "models").unlink()
    gguf = root / "models/gguf"
    gguf.mkdir(parents=True)
    for name in (DEFAULT_GGUF.name, "second.gguf"):
        try:
            os.link(DEFAULT_GGUF, gguf / name)
        except OSError:
            shutil.copyfile(DEFAULT_GGUF, gguf / name)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("stack", ["compose", "local"])
def test_model_path_in_env_is_served_and_doctor_flags_a_mismatch(
    project: Project, stack: str
) -> None:
    _second_model(project.root)
    project.write_env(MODEL_PATH="/models/second.gguf", KCW_STACK=stack)
    url = project.settings["LLM_SERVER_URL"]
    try:
        up = run_kcw(["up"], project.env, project.root, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert _served(url) == ["second"]
        fine = run_kcw(["doctor"], project.env, project.root)
        assert "[warn]" not in fine.stdout, fine.stdout

        project.write_env(MODEL_PATH="/models/third.gguf")  # .env changed, stack not restarted
        flagged = run_kcw(["doctor"], project.env, project.root)
        assert "[warn] Model" in flagged.stdout, flagged.stdout
        assert "serves second, but .env asks for third (MODEL_PATH=/models/third.gguf)" in (
            flagged.stdout
        )
        assert "make down && make up" in flagged.stdout
    finally:
        run_kcw(["down"], project.env, project.root, timeout=300)


def test_a_memory_limit_too_small_for_the_model_is_named_by_the_server_and_doctor(
    project: Project,
) -> None:
    project.write_env(LLM_MEMORY_LIMIT="256m", LLM_MEMORY_RESERVATION="64m")
    started = project.compose(LLAMACPP, "up", "-d")
    assert started.returncode == 0, started.stderr
    line = "the memory limit of this container (256 MiB) is too small"

    def said() -> bool:
        return line in project.compose(LLAMACPP, "logs", "llm-server").stdout

    wait_until(said, 120, "the launcher's memory line")
    logs = project.compose(LLAMACPP, "logs", "llm-server").stdout
    assert "KV cache (720 MiB for N_CTX=4096 x N_PARALLEL=8)" in logs
    assert "Raise LLM_MEMORY_LIMIT in .env" in logs

    doctor = run_kcw(["doctor"], project.env, project.root)
    assert doctor.returncode == 1
    assert "[FAIL] LLM server" in doctor.stdout and line in doctor.stdout, doctor.stdout
    assert "fix: raise LLM_MEMORY_LIMIT in .env" in doctor.stdout


def test_a_full_compose_redis_refuses_jobs_at_submit_and_keeps_the_queued_ones(
    tmp_path: Path,
) -> None:
    stack: Stack = new_stack(
        ["docker-compose.yml"], REDIS_MEMORY_LIMIT="64m", REDIS_MEMORY_RESERVATION="16m"
    )
    with stack.running():
        server = RedisServer(stack.redis_port, stack.env["REDIS_PASSWORD"], None)  # type: ignore[arg-type]
        client = server.client()
        assert int(client.config_get("maxmemory")["maxmemory"]) == (64 << 20) * 3 // 4
        app = client_app(server)
        payload = {"messages": [{"role": "user", "content": "z" * 200_000}], "max_tokens": 1}
        queued: list[str] = []
        try:
            with pytest.raises(Exception, match="maxmemory"):
                for _ in range(1000):
                    queued.append(app.send_task("kcw.chat", args=[payload]).id)
        finally:
            app.close()
        (tmp_path / "long.txt").write_text("z" * 200_000)
        env = worker_env(server, "http://127.0.0.1:9")

        done = run_kcw(["submit", "chat", "@long.txt"], env, tmp_path)

        assert done.returncode == 1 and "Redis refused the job: it is full" in done.stderr
        assert "REDIS_MEMORY_LIMIT" in done.stderr
        # Read back in small pages: one reply of the whole queue would need as much memory again.
        messages = [
            m for n in range(0, len(queued) + 1, 10) for m in client.lrange("kcw", n, n + 9)
        ]
        ids = [json.loads(m)["headers"]["id"] for m in reversed(messages)]
        assert ids == queued and len(queued) > 50
        state = stack.inspect("redis")
        assert state["State"]["OOMKilled"] is False and state["RestartCount"] == 0
