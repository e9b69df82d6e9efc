"""Settings by audience, read from the environment and `.env`.

Compose, the llama.cpp launcher, `kcw` and the worker share one `.env`, so unknown
keys are ignored and real environment variables win over the file. Each part reads
the class for its audience and receives it explicitly:

    WorkerSettings      the worker and every submitter: Redis, the LLM servers, jobs
    StackSettings       `kcw up` and `kcw models pull`: the worker's keys plus the local
                        llama.cpp server and the images compose needs
    ComposeSettings     keys only the compose files and image builds read
    ApiSettings         `kcw serve` and `kcw batch`: the worker's keys plus the HTTP API,
                        its data directory and the batch window
    Settings            every key of `.env`, checked as a whole by `kcw`
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import SettingsError
from worker.sizes import REDIS_SIZE, docker_bytes, redis_bytes

__all__ = [
    "PLACEHOLDER_SECRETS",
    "ApiSettings",
    "ComposeSettings",
    "Settings",
    "SettingsError",
    "StackSettings",
    "WorkerSettings",
    "get_settings",
    "load_settings",
]

# Values shipped in .env.sample; a real deployment must replace them.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "please-change-me"})

# Extra seconds a message stays invisible beyond the longest task, so a slow
# worker finishing near its hard limit is never raced by a redelivery.
VISIBILITY_MARGIN_S = 300

S = TypeVar("S", bound=BaseSettings)


def _server_url(raw: str) -> str:
    """One server's base URL without a trailing slash or `/v1` (we add paths ourselves)."""
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} must start with http:// or https://")
    return url.removesuffix("/v1")


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )


class WorkerSettings(_EnvSettings):
    """What the worker and every submitter read: Redis, the LLM servers, the jobs' limits."""

    # Redis: broker and result backend.
    redis_host: str = "localhost"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_db: int = Field(0, ge=0, le=15)
    redis_password: SecretStr = SecretStr("")

    # The OpenAI-compatible LLM server, or several (comma-separated) that share the work.
    llm_server_url: str = "http://localhost:8000"
    llm_api_key: SecretStr = SecretStr("")
    llm_timeout: float = Field(120.0, gt=0, description="seconds for one HTTP request")
    llm_backend: Literal["auto", "llamacpp", "vllm"] = "auto"
    llm_model: str = ""
    llm_context_length: int = Field(0, ge=0, description="0 = ask the server")

    # Requests one worker keeps in flight to one server, at most (the window learns below it).
    llm_max_inflight: int = Field(64, ge=1, le=1024)
    # Seconds between `/health` probes of a server marked down.
    llm_health_interval: float = Field(2.0, gt=0)

    # Seconds-scale retries inside the client (tenacity).
    llm_retry_attempts: int = Field(5, ge=1, le=20)
    llm_retry_max_wait: float = Field(30.0, gt=0)

    # Minutes-scale retries of a whole task while the server is down (Celery).
    task_max_retries: int = Field(5, ge=0, le=100)
    task_retry_backoff_max: int = Field(300, ge=1)
    task_time_limit: int = Field(1800, ge=10)
    result_expires: int = Field(86400, ge=60)
    # 0 = derived from the limits above (see `visibility_timeout`).
    redis_visibility_timeout: int = Field(0, ge=0)
    # atomic: take a job and record it as unacknowledged in one step (runtime.reliable_redis).
    redis_fetch: Literal["atomic", "brpop"] = "atomic"

    # Worker process.
    worker_concurrency: int = Field(0, ge=0, le=1024, description="0 = sized to the servers")
    worker_pool: Literal["threads", "prefork", "solo"] = "threads"
    # Prometheus `/metrics` of each worker: the first free port from this one up; 0 = off.
    worker_metrics_port: int = Field(9810, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # `json`: one JSON object per log line, with the job id and kind (for log shippers).
    log_format: Literal["text", "json"] = "text"

    # Job behaviour.
    extract_max_attempts: int = Field(3, ge=1, le=10)
    summary_max_tokens: int = Field(256, ge=16)

    @field_validator("llm_server_url")
    @classmethod
    def _normalise_urls(cls, value: str) -> str:
        urls = [_server_url(part) for part in value.replace(" ", ",").split(",") if part.strip()]
        if not urls:
            raise ValueError("names no server; give one URL, or several separated by commas")
        if len(set(urls)) != len(urls):
            raise ValueError("names the same server twice")
        return ",".join(urls)

    @field_validator("redis_password", "llm_api_key")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is still the placeholder from .env.sample; set a real secret")
        return value

    @model_validator(mode="after")
    def _time_budget(self) -> WorkerSettings:
        if self.task_time_limit <= self.llm_timeout:
            raise ValueError(
                f"TASK_TIME_LIMIT ({self.task_time_limit}) must be longer than "
                f"LLM_TIMEOUT ({self.llm_timeout:g})"
            )
        return self

    @property
    def llm_server_urls(self) -> tuple[str, ...]:
        """Every LLM server the worker sends requests to."""
        return tuple(self.llm_server_url.split(","))

    @property
    def redis_url(self) -> str:
        """The broker and backend URL, with the password quoted for the URL."""
        password = self.redis_password.get_secret_value()
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def task_soft_time_limit(self) -> int:
        """Raised inside the task shortly before the hard limit kills it."""
        return max(self.task_time_limit - 30, int(self.task_time_limit * 0.9))

    @property
    def visibility_timeout(self) -> int:
        """How long Redis hides a delivered message before giving it to another worker.

        It must outlast the longest run of a task plus the longest retry
        countdown, or a slow job would be delivered twice.
        """
        if self.redis_visibility_timeout:
            return self.redis_visibility_timeout
        return self.task_time_limit + self.task_retry_backoff_max + VISIBILITY_MARGIN_S


class StackSettings(WorkerSettings):
    """What `kcw up` and `kcw models pull` read on top of the worker's keys."""

    # The llama.cpp server that `make up` or compose starts.
    llamacpp_engine: Literal["server", "python"] = "server"
    model_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    # The GGUF file to serve, winning over MODEL_FILE: /models/<file> (where compose mounts
    # models/gguf/) or, for `make up` without Docker, any path on this host.
    model_path: str = ""
    # Redis's memory cap: auto (3/4 of the container's memory limit), 0 (none), or a size.
    redis_maxmemory: str = "auto"
    n_ctx: int = Field(4096, ge=256)
    n_parallel: int = Field(8, ge=1, le=256)
    n_gpu_layers: int = Field(0, ge=-1)
    embedding: bool = False
    llm_port: int = Field(8000, ge=1, le=65535)

    # How `make up` runs the stack: auto (compose where a Docker engine answers), compose, local.
    kcw_stack: Literal["auto", "compose", "local"] = "auto"

    # The compose layering and the images `kcw up` checks before it runs compose.
    compose_file: str = "docker-compose.yml:docker-compose.llamacpp.yml"
    redis_image: str = "redis:7.4.2-alpine"
    llamacpp_image: str = "kc-worker-llamacpp:latest"
    llamacpp_base_image: str = "python:3.11.14-slim-bookworm"
    llamacpp_runtime_image: str = ""
    vllm_image: str = "vllm/vllm-openai"
    vllm_version: str = "v0.33.0"
    vllm_local_image: str = "kc-worker-vllm:latest"
    vllm_cpu_base_image: str = "python:3.11.14-slim-bookworm"
    vllm_cpu_local_image: str = "kc-worker-vllm-cpu:latest"

    # `kcw models pull`: a Hugging Face token for gated models.
    hf_token: SecretStr = SecretStr("")

    @field_validator("redis_maxmemory")
    @classmethod
    def _redis_size(cls, value: str) -> str:
        if not REDIS_SIZE.fullmatch(value.strip()):
            raise ValueError("must be auto, 0, or a size Redis reads, such as 512mb or 2gb")
        return value.strip().lower()

    @property
    def gguf_path(self) -> Path:
        """The GGUF model on this host: MODEL_PATH (/models/ is models/gguf/), else MODEL_FILE."""
        if not self.model_path:
            return Path("models/gguf") / self.model_file
        path = Path(self.model_path)
        if path.parts[:2] == ("/", "models") and not path.exists():
            return Path("models/gguf", *path.parts[2:])
        return path

    @property
    def model_setting(self) -> str:
        """The key and value that chose the model, for messages."""
        return (
            f"MODEL_PATH={self.model_path}" if self.model_path else f"MODEL_FILE={self.model_file}"
        )


class ComposeSettings(_EnvSettings):
    """Keys only the compose files and image builds read; listed so `.env` is checked whole."""

    worker_network: str = "worker-network"
    # Resource limits of the compose services (docker compose applies limits and memory
    # reservations; CPU reservations only count under Swarm). CPU limit 0 = every core.
    redis_cpu_limit: float = Field(1, ge=0)
    redis_memory_limit: str = "1g"
    redis_cpu_reservation: float = Field(0.25, ge=0)
    redis_memory_reservation: str = "128m"
    llm_cpu_limit: float = Field(0, ge=0)
    llm_memory_limit: str = "8g"
    llm_cpu_reservation: float = Field(0, ge=0)
    llm_memory_reservation: str = "512m"

    # Log rotation of docker-compose.prod.yml.
    log_max_size: str = "10m"
    log_max_file: int = Field(5, ge=1)

    @field_validator(
        "redis_memory_limit",
        "redis_memory_reservation",
        "llm_memory_limit",
        "llm_memory_reservation",
    )
    @classmethod
    def _docker_size(cls, value: str) -> str:
        docker_bytes(value)
        return value.strip()

    @model_validator(mode="after")
    def _reservation_within_limit(self) -> ComposeSettings:
        for service in ("redis", "llm"):
            limit = getattr(self, f"{service}_memory_limit")
            reserved = getattr(self, f"{service}_memory_reservation")
            if docker_bytes(reserved) > docker_bytes(limit):
                name = service.upper()
                raise ValueError(
                    f"{name}_MEMORY_RESERVATION ({reserved}) is above {name}_MEMORY_LIMIT "
                    f"({limit}), which Docker refuses: lower the reservation or raise the limit"
                )
        return self

    llamacpp_cmake_args: str = ""
    llamacpp_prebuilt_image: str = ""
    llm_start_period: str = "180s"
    nvidia_gpu_count: str = "all"
    rocm_video_group: str = "video"
    rocm_render_group: str = "render"
    vllm_shm_size: str = "16g"
    vllm_cpu_kvcache_space: int = Field(2, ge=1)
    model_name: str = "/models/SmolLM2-135M-Instruct"
    served_model_name: str = ""
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int = Field(4096, ge=16)
    vllm_extra_args: str = ""
    image_registry: str = ""
    # The monitoring overlay (docker-compose.monitoring.yml).
    prometheus_image: str = "prom/prometheus:v2.55.1"
    grafana_image: str = "grafana/grafana:11.4.0"
    redis_exporter_image: str = "oliver006/redis_exporter:v1.66.0-alpine"
    prometheus_port: int = Field(9090, ge=1, le=65535)
    prometheus_retention: str = "15d"
    grafana_port: int = Field(3000, ge=1, le=65535)
    grafana_admin_password: SecretStr = SecretStr("")
    redis_exporter_port: int = Field(9121, ge=1, le=65535)


# OpenAI's limits on one batch input file.
BATCH_MAX_BYTES = 200 * 1024 * 1024
BATCH_MAX_LINES = 50_000


class ApiSettings(WorkerSettings):
    """What `kcw serve` (the Files and Batch API) and `kcw batch` read on top of the worker's."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(8100, ge=1, le=65535)
    # Bearer key every /v1 route needs; empty is allowed only on a loopback API_HOST.
    kcw_api_key: SecretStr = SecretStr("")
    # Where `kcw batch` finds the API; empty = http://API_HOST:API_PORT (loopback for 0.0.0.0).
    kcw_api_url: str = ""
    kcw_data_dir: Path = Path("data")
    # Batch lines queued or running at once over all batches; 0 = the servers' windows + 1/4.
    batch_window: int = Field(0, ge=0, le=4096)
    # Seconds before a line sent with no result is sent again; 0 = the visibility timeout.
    batch_line_timeout: int = Field(0, ge=0)
    batch_max_bytes: int = Field(BATCH_MAX_BYTES, ge=1024)
    batch_max_lines: int = Field(BATCH_MAX_LINES, ge=1)

    @field_validator("kcw_api_key")
    @classmethod
    def _refuse_placeholder_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError("is still the placeholder from .env.sample; set a real secret")
        return value

    @field_validator("kcw_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _server_url(value) if value.strip() else ""

    @property
    def api_url(self) -> str:
        """The API's base URL (without /v1) as a client on this machine reaches it."""
        if self.kcw_api_url:
            return self.kcw_api_url
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.api_port}"

    @property
    def line_timeout(self) -> int:
        """Seconds a batch line may stay without a result before it is sent again."""
        return self.batch_line_timeout or self.visibility_timeout


class Settings(StackSettings, ComposeSettings, ApiSettings):
    """Every key the worker, `kcw`, the API, the compose files and the image builds read."""

    @model_validator(mode="after")
    def _redis_cap_below_its_limit(self) -> Settings:
        if self.redis_maxmemory in ("auto", "0"):
            return self
        if redis_bytes(self.redis_maxmemory) >= docker_bytes(self.redis_memory_limit):
            raise ValueError(
                f"REDIS_MAXMEMORY ({self.redis_maxmemory}) is not below REDIS_MEMORY_LIMIT "
                f"({self.redis_memory_limit}): the kernel would kill Redis before it refuses "
                "new jobs. Use REDIS_MAXMEMORY=auto (3/4 of the limit), a smaller size, or raise "
                "REDIS_MEMORY_LIMIT"
            )
        return self


def load_settings(cls: type[S] = Settings, **overrides: object) -> S:  # type: ignore[assignment]
    """Build settings of `cls`, turning validation errors into one message per bad key."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = "_".join(str(part) for part in err["loc"]).upper() or "settings"
            value = err.get("input")
            shown = "<secret>" if "PASSWORD" in key or "KEY" in key else repr(value)
            if isinstance(value, dict):
                lines.append(f"  {err['msg']}")
            else:
                lines.append(f"  {key}={shown}: {err['msg']}")
        raise SettingsError(
            "Invalid settings (fix them in .env or the environment):\n" + "\n".join(lines)
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Every key, read once per process on first use (for `kcw`; the worker reads its own)."""
    return load_settings(Settings)
