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
    "llamacpp+prod": [
        "docker-compose.yml",
        "docker-compose.llamacpp.yml",
        "docker-compose.prod.yml",
    ],
    "vllm+prod": ["docker-compose.yml", "docker-compose.vllm.yml", "docker-compose.prod.yml"],
    "vllm+cpu+prod": [
        "docker-compose.yml",
        "docker-compose.vllm.yml",
        "docker-compose.vllm.cpu.yml",
        "docker-compose.prod.yml",
    ],
    "llamacpp+nvidia+prod": [
        "docker-compose.yml",
        "docker-compose.llamacpp.yml",
        "docker-compose.nvidia.yml",
        "docker-compose.prod.yml",
    ],
    "llamacpp+dev": ["docker-compose.yml", "docker-compose.llamacpp.yml", "docker-compose.dev.yml"],
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
    for name in ("redis", "llm-server"):
        if name not in config["services"]:
            continue
        # Every layering keeps the limits and reservations from .env.
        resources = config["services"][name]["deploy"]["resources"]
        assert int(resources["limits"]["memory"]) > int(resources["reservations"]["memory"]) > 0
    if layering.startswith(("llamacpp+nvidia", "vllm+prod")) or layering == "vllm":
        devices = config["services"]["llm-server"]["deploy"]["resources"]["reservations"]
        assert devices["devices"][0]["driver"] == "nvidia"
    if layering in ("llamacpp", "vllm+cpu", "vllm+cpu+prod", "llamacpp+prod"):
        reservations = config["services"]["llm-server"]["deploy"]["resources"]["reservations"]
        assert "devices" not in reservations, "a CPU layering reserves no GPU"
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


DEFAULT_LIMITS = {
    "redis": (1.0, 1 << 30, 128 << 20),
    "llm-server": (None, 8 << 30, 512 << 20),
}


@pytest.mark.parametrize("layering", ["llamacpp", "vllm+cpu"])
def test_limits_and_reservations_come_from_env_with_defaults(layering: str) -> None:
    default = json.loads(compose_config(LAYERINGS[layering], compose_env()).stdout)
    for name, (cpus, memory, reserved) in DEFAULT_LIMITS.items():
        resources = default["services"][name]["deploy"]["resources"]
        assert resources["limits"].get("cpus") == cpus, name  # 0 = every core: no key
        assert int(resources["limits"]["memory"]) == memory
        assert int(resources["reservations"]["memory"]) == reserved
    assert default["services"]["redis"]["environment"]["REDIS_MAXMEMORY"] == "auto"
    env = compose_env(
        REDIS_CPU_LIMIT="0.5",
        REDIS_MEMORY_LIMIT="64m",
        REDIS_MEMORY_RESERVATION="32m",
        LLM_CPU_LIMIT="1.5",
        LLM_MEMORY_LIMIT="3g",
        LLM_MEMORY_RESERVATION="1g",
        REDIS_MAXMEMORY="48mb",
    )
    changed = json.loads(compose_config(LAYERINGS[layering], env).stdout)["services"]
    assert changed["redis"]["deploy"]["resources"]["limits"] == {"cpus": 0.5, "memory": "67108864"}
    assert changed["redis"]["environment"]["REDIS_MAXMEMORY"] == "48mb"
    server = changed["llm-server"]["deploy"]["resources"]
    assert server["limits"] == {"cpus": 1.5, "memory": str(3 << 30)}
    assert server["reservations"]["memory"] == str(1 << 30)


@pytest.mark.parametrize("layering", [k for k in LAYERINGS if k.endswith("+prod")])
def test_the_prod_overlay_hardens_every_service(layering: str) -> None:
    config = json.loads(compose_config(LAYERINGS[layering], compose_env()).stdout)
    for name in ("redis", "llm-server"):
        service = config["services"][name]
        assert service["read_only"] is True, name
        assert service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "5"},
        }, name
        assert service["restart"] == "unless-stopped"
        assert [p["host_ip"] for p in service["ports"]] == ["127.0.0.1"]
    assert set(config["services"]["llm-server"].get("cap_add", [])) == set()
    assert set(config["services"]["redis"]["cap_add"]) == {
        "CHOWN",
        "DAC_OVERRIDE",
        "SETGID",
        "SETUID",
    }
    networks = config["networks"]
    redis_networks = set(config["services"]["redis"]["networks"])
    assert redis_networks == {"internal", "redis-port"}, "Redis leaves the shared network"
    assert networks["internal"]["internal"] is True
    assert networks["redis-port"]["driver_opts"] == {
        "com.docker.network.bridge.enable_ip_masquerade": "false"
    }
    assert "internal" in config["services"]["llm-server"]["networks"]


def test_the_dev_overlay_mounts_the_launcher_and_logs_at_debug() -> None:
    config = json.loads(compose_config(LAYERINGS["llamacpp+dev"], compose_env()).stdout)
    default = json.loads(compose_config(LAYERINGS["llamacpp"], compose_env()).stdout)
    server = config["services"]["llm-server"]
    mounts = {v["target"]: v for v in server["volumes"]}
    for name in ("launcher.py", "entrypoint.sh"):
        mount = mounts[f"/opt/kcw/{name}"]
        assert mount["source"] == str(ROOT / "docker/llamacpp" / name)
        assert mount["read_only"] is True
    assert server["environment"]["LOG_LEVEL"] == "DEBUG"
    assert server["environment"]["LLAMA_ARG_LOG_VERBOSITY"] == "4"
    assert config["services"]["redis"]["environment"]["REDIS_LOGLEVEL"] == "verbose"
    for name in ("redis", "llm-server"):
        assert config["services"][name]["ports"] == default["services"][name]["ports"]
        assert config["services"][name]["image"] == default["services"][name]["image"]


def test_model_path_wins_over_model_file_in_compose() -> None:
    files = LAYERINGS["llamacpp"]
    default = json.loads(compose_config(files, compose_env(MODEL_FILE="a.gguf")).stdout)
    assert default["services"]["llm-server"]["environment"]["MODEL_PATH"] == "/models/a.gguf"
    env = compose_env(MODEL_FILE="a.gguf", MODEL_PATH="/models/llama-2-7b-chat.Q4_K_M.gguf")
    chosen = json.loads(compose_config(files, env).stdout)["services"]["llm-server"]
    assert chosen["environment"]["MODEL_PATH"] == "/models/llama-2-7b-chat.Q4_K_M.gguf"


def test_the_redis_entrypoint_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is missing: `scripts/docker-env install` installs it")
    done = subprocess.run(
        [shellcheck, str(ROOT / "docker/redis/entrypoint.sh")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
