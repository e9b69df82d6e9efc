"""Static checks of the Docker files: compose layerings resolve, Dockerfiles lint clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

LAYERINGS = {
    "base": ["docker-compose.yml"],
    "llamacpp": ["docker-compose.yml", "docker-compose.llamacpp.yml"],
    "llamacpp+nvidia": [
        "docker-compose.yml",
        "docker-compose.llamacpp.yml",
        "docker-compose.nvidia.yml",
    ],
    "llamacpp+rocm": [
        "docker-compose.yml",
        "docker-compose.llamacpp.yml",
        "docker-compose.rocm.yml",
    ],
    "vllm": ["docker-compose.yml", "docker-compose.vllm.yml"],
    "vllm+cpu": ["docker-compose.yml", "docker-compose.vllm.yml", "docker-compose.vllm.cpu.yml"],
    "llamacpp+monitoring": [
        "docker-compose.yml",
        "docker-compose.llamacpp.yml",
        "docker-compose.monitoring.yml",
    ],
    "vllm+monitoring": [
        "docker-compose.yml",
        "docker-compose.vllm.yml",
        "docker-compose.monitoring.yml",
    ],
}
MONITORING = ("prometheus", "grafana", "redis-exporter")


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"}
    env.update(
        REDIS_PASSWORD="static-check-password",
        GRAFANA_ADMIN_PASSWORD="static-check-grafana",
        **extra,
    )
    return env


def compose_config(files: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # An empty env file: a developer's .env must not decide the outcome.
    command = ["docker", "compose", "--project-directory", str(ROOT), "--env-file", os.devnull]
    for name in files:
        command += ["-f", str(ROOT / name)]
    return subprocess.run(
        [*command, "config", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("layering", LAYERINGS)
def test_compose_config_resolves(layering: str) -> None:
    done = compose_config(LAYERINGS[layering], compose_env())
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    redis = config["services"]["redis"]
    assert redis["restart"] == "unless-stopped"
    assert "--requirepass" in redis["command"]
    assert "static-check-password" in redis["command"]
    for service in config["services"].values():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", port
        assert service["restart"] == "unless-stopped"
        assert "healthcheck" in service
    if layering != "base":
        server = config["services"]["llm-server"]
        assert server["depends_on"]["redis"]["condition"] == "service_healthy"
        assert [p["target"] for p in server["ports"]] == [8000]
    if layering in ("llamacpp+nvidia", "vllm"):
        devices = config["services"]["llm-server"]["deploy"]["resources"]["reservations"]
        assert devices["devices"][0]["driver"] == "nvidia"
    if layering in ("llamacpp", "vllm+cpu"):
        assert "deploy" not in config["services"]["llm-server"], "a CPU layering reserves no GPU"
    if layering == "vllm+cpu":
        assert config["services"]["llm-server"]["build"]["target"] == "cpu"
    if layering.endswith("+monitoring"):
        for name in MONITORING:
            service = config["services"][name]
            # The host's network reaches the host's workers; each binds to loopback itself.
            assert service["network_mode"] == "host" and "ports" not in service
            assert "@" not in service["image"] and ":" in service["image"].split("/")[-1]
            assert not service["image"].endswith(":latest"), service["image"]
        prometheus = config["services"]["prometheus"]
        assert "--web.listen-address=127.0.0.1:9090" in prometheus["command"]
        grafana = config["services"]["grafana"]["environment"]
        assert grafana["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
        assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "static-check-grafana"


def test_grafana_needs_its_admin_password() -> None:
    env = compose_env()
    del env["GRAFANA_ADMIN_PASSWORD"]
    done = compose_config(LAYERINGS["llamacpp+monitoring"], env)
    assert done.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in done.stderr


def test_monitoring_files_parse_and_every_panel_queries_our_prometheus() -> None:
    import yaml

    scrape = yaml.safe_load((ROOT / "docker/monitoring/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert jobs == {"kcw-workers", "kcw-serve", "llm-server", "redis"}
    dashboard = json.loads(
        (ROOT / "docker/monitoring/grafana/dashboards/kc-worker.json").read_text()
    )
    source = yaml.safe_load(
        (ROOT / "docker/monitoring/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = source["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_redis_password_is_required() -> None:
    env = compose_env()
    del env["REDIS_PASSWORD"]
    done = compose_config(LAYERINGS["base"], env)
    assert done.returncode != 0
    assert "REDIS_PASSWORD" in done.stderr


def test_env_sample_compose_file_gives_the_llamacpp_layering() -> None:
    sample = (ROOT / ".env.sample").read_text()
    line = next(x for x in sample.splitlines() if x.startswith("COMPOSE_FILE="))
    assert line.split("=", 1)[1].split(":") == LAYERINGS["llamacpp"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.llamacpp", "Dockerfile.vllm"])
def test_hadolint_is_clean(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint") or str(BIN / "hadolint")
    done = subprocess.run(
        [hadolint, str(ROOT / dockerfile)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
