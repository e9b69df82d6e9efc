"""Probes of Redis, the LLM server and the workers; each failed probe says how to fix it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.broker import QUEUE, make_app, queue_depth
from worker.config import Settings, WorkerSettings
from worker.errors import LLMError
from worker.llm.client import LLMClient
from worker.ops.compose import container_hint

__all__ = [
    "Check",
    "check_llm_server",
    "check_llm_servers",
    "check_redis",
    "check_workers",
    "queue_length",
    "stack_checks",
    "wait_until_ready",
]

Status = Literal["ok", "warn", "wait", "fail"]


@dataclass
class Check:
    """The outcome of one probe, for people: what was found, and the fix if it failed."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "warn")


def redis_client(settings: WorkerSettings, timeout: float = 3.0) -> redis.Redis:
    """A plain Redis client with the worker's settings, for one-off probes.

    No retries: redis-py's default (10 tries with backoff) would make a probe of a
    Redis that is down take seconds before it says so.
    """
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password.get_secret_value() or None,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def check_redis(settings: WorkerSettings) -> Check:
    """Is Redis reachable, and does it take our password?"""
    where = f"{settings.redis_host}:{settings.redis_port} db {settings.redis_db}"
    client = redis_client(settings)
    try:
        client.ping()
        info = client.info("server")
    except redis.AuthenticationError as exc:
        text = str(exc).lower()
        if "without any password" in text:
            fix = "this Redis has no password; set requirepass on it (the compose file does)"
        elif settings.redis_password.get_secret_value():
            fix = "set REDIS_PASSWORD in .env to the password the Redis server was started with"
        else:
            fix = "this Redis requires a password: set REDIS_PASSWORD in .env"
        return Check("Redis", "fail", f"{where}: password refused", fix)
    except redis.ResponseError as exc:
        if "noauth" in str(exc).lower():
            fix = "this Redis requires a password: set REDIS_PASSWORD in .env"
            return Check("Redis", "fail", f"{where}: password required", fix)
        return Check("Redis", "fail", f"{where}: {exc}", "check the Redis server's log")
    except redis.RedisError as exc:
        return Check(
            "Redis",
            "fail",
            f"{where}: not reachable ({exc.__class__.__name__})",
            "start it with `make up`, or set REDIS_HOST/REDIS_PORT to where it runs",
        )
    finally:
        client.close()
    version = info.get("redis_version", "?")
    auth = "password accepted" if settings.redis_password.get_secret_value() else "no password"
    return Check("Redis", "ok", f"{where}, {auth} (redis {version})")


def check_llm_servers(settings: WorkerSettings) -> list[Check]:
    """One check per server in LLM_SERVER_URL."""
    urls = settings.llm_server_urls
    if len(urls) == 1:
        return [check_llm_server(settings)]
    checks = []
    for n, url in enumerate(urls, 1):
        check = check_llm_server(settings.model_copy(update={"llm_server_url": url}))
        check.name = f"LLM server {n}"
        checks.append(check)
    return checks


def check_llm_server(settings: WorkerSettings, client: LLMClient | None = None) -> Check:
    """Is the (first) LLM server up and ready, and what does it serve?"""
    own = client is None
    client = client or LLMClient(settings.model_copy(update={"llm_retry_attempts": 1}))
    url = settings.llm_server_urls[0]
    try:
        health = client.health()
        if health.state == "unreachable":
            said = _container_says(url)
            return Check(
                "LLM server",
                "fail",
                f"{url}: not reachable ({health.detail.split(':')[0]})"
                + (f"; its container: {said}" if said else ""),
                "raise LLM_MEMORY_LIMIT in .env (or lower N_CTX / N_PARALLEL), then `make up`"
                if said
                else "start it with `make up` (or docker compose), or set LLM_SERVER_URL to "
                "where it runs; a vLLM server keeps its port closed until its model is loaded",
            )
        if health.state == "loading":
            return Check(
                "LLM server",
                "wait",
                f"{url}: still loading its model (HTTP 503 {health.detail})",
                f"wait; `curl {url}/health` answers 200 once the model is loaded",
            )
        if health.state == "failed":
            return Check(
                "LLM server",
                "fail",
                f"{url}/health answered HTTP {health.status_code}: {health.detail[:300]}",
                "read the server's log (`make logs`); a missing model file is fixed with "
                "`make model` or MODEL_FILE",
            )
        try:
            info = client.server_info(refresh=True)
        except LLMError as exc:
            return Check("LLM server", "fail", f"{url}: /v1/models failed: {exc}", _fix_for(exc))
        load = client.metrics() if info.profile.reports_queue else {}
    finally:
        if own:
            client.close()
    context = f"{info.context_length} tokens" if info.context_length else "unknown"
    engine = f" ({info.engine})" if info.engine else ""
    slots = f", {info.capacity} slots" if info.capacity else ""
    busy = ""
    if load:
        busy = (
            f"; {load.get('running', 0):g} running, {load.get('waiting', 0):g} waiting, "
            f"KV cache {load.get('kv_cache_usage', 0) * 100:.0f}% used"
        )
    return Check(
        "LLM server",
        "ok",
        f"{url}: ready; backend {info.backend}{engine}, model {info.model}, "
        f"context {context}{slots}{busy}",
        facts={"backend": info.backend, "model": info.model, "context": info.context_length},
    )


def check_served_model(settings: Settings, llm: Check) -> Check | None:
    """A warning when the LLM server serves another model than the one `.env` asks for
    (a stack started before `.env` changed, or a missing file replaced by the default)."""
    backend, served = llm.facts.get("backend"), llm.facts.get("model")
    if not llm.ok or settings.llm_model or not served:
        return None
    if backend == "vllm":
        expected = settings.served_model_name or settings.model_name
        key = "SERVED_MODEL_NAME" if settings.served_model_name else "MODEL_NAME"
        asked = f"{key}={expected}"
    elif backend == "llamacpp":
        expected, asked = settings.gguf_path.stem, settings.model_setting
    else:
        return None
    if served == expected:
        return None
    return Check(
        "Model",
        "warn",
        f"the LLM server serves {served}, but .env asks for {expected} ({asked})",
        "restart the LLM server so it reads .env (`make down && make up`); if the file is "
        "missing, the llama.cpp server serves its bundled default instead (see its log)",
    )


def _container_says(url: str) -> str | None:
    """What Docker knows of a local compose LLM server that is down (memory), if anything."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not parts.port:
        return None
    return container_hint("llm-server", parts.port)


def _fix_for(exc: LLMError) -> str:
    text = str(exc)
    for key in ("LLM_API_KEY", "LLM_MODEL", "LLM_SERVER_URL", "LLM_TIMEOUT"):
        if key in text:
            return f"set {key} in .env"
    return "read the server's log (`make logs`)"


def queue_length(settings: WorkerSettings, queue: str) -> int | None:
    """Jobs waiting in the Celery queue: its Redis list and those of its priorities."""
    client = redis_client(settings)
    try:
        return queue_depth(client, queue)[0]
    except redis.RedisError:
        return None
    finally:
        client.close()


def check_workers(settings: WorkerSettings, queue: str = QUEUE, timeout: float = 2.0) -> Check:
    """Does any worker answer a ping, and which queues does it consume?"""
    app = make_app(settings)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # kombu raises many kinds; any of them means no answer
        return Check("Workers", "fail", f"could not ask the workers: {exc}", "check Redis first")
    finally:
        app.close()
    waiting = queue_length(settings, queue)
    backlog = f"; {waiting} job(s) waiting in '{queue}'" if waiting is not None else ""
    if not replies:
        return Check(
            "Workers",
            "fail",
            f"no worker answered within {timeout:g}s{backlog}",
            "start one with `make worker` or `celery -A worker worker --loglevel=info` (a "
            "worker that lost Redis a moment ago may still be reconnecting: try again in 10 s)",
        )
    names = []
    serving = False
    for name, queues in replies.items():
        queue_names = sorted(q.get("name", "?") for q in queues)
        serving = serving or queue in queue_names
        names.append(f"{name} ({', '.join(queue_names)})")
    if not serving:
        return Check(
            "Workers",
            "fail",
            f"{len(replies)} worker(s) alive but none consumes '{queue}': {'; '.join(names)}",
            f"start a worker without -Q, or with -Q {queue}",
        )
    return Check("Workers", "ok", f"{len(replies)} alive: {'; '.join(names)}{backlog}")


def stack_checks(settings: WorkerSettings) -> list[Check]:
    """Redis, then each LLM server: what must answer before jobs can run."""
    return [check_redis(settings), *check_llm_servers(settings)]


def wait_until_ready(
    settings: WorkerSettings,
    timeout: float,
    *,
    interval: float = 1.0,
    watch: Callable[[], None] | None = None,
) -> tuple[bool, list[Check]]:
    """Probe until Redis and every LLM server are ready, or `timeout` passes.

    Returns whether they became ready, with the last checks. `watch` runs between
    probes and may raise (a process we started exited, say).
    """
    deadline = time.monotonic() + timeout
    while True:
        checks = stack_checks(settings)
        if all(c.ok for c in checks):
            return True, checks
        if time.monotonic() > deadline:
            return False, checks
        if watch is not None:
            watch()
        time.sleep(interval)
