"""Celery worker processes: their command line, their environment, and starting one."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from worker.errors import ProcessStartError
from worker.ops.processes import spawn, wait_until

__all__ = [
    "WORKER_ENV_PREFIXES",
    "Worker",
    "celery_bin",
    "start_worker",
    "worker_argv",
    "worker_env",
]

# Keys a worker reads; a test or bench environment drops the caller's own before setting them.
WORKER_ENV_PREFIXES = ("REDIS_", "LLM_", "TASK_", "WORKER_", "EXTRACT_", "SUMMARY_", "LOG_")


def celery_bin() -> str:
    """The `celery` command of the running interpreter's environment."""
    return str(Path(sys.executable).with_name("celery"))


def worker_argv(
    *,
    app: str = "worker",
    loglevel: str = "info",
    hostname: str | None = None,
    quiet: bool = False,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`celery -A <app> worker --loglevel=<level>`; `quiet` drops mingle and gossip chatter."""
    argv = [celery_bin(), "-A", app, "worker", f"--loglevel={loglevel}"]
    if hostname:
        argv += ["--hostname", hostname]
    if quiet:
        argv += ["--without-mingle", "--without-gossip"]
    return [*argv, *extra]


def worker_env(
    base: Mapping[str, str],
    *,
    redis_port: int,
    redis_password: str,
    llm_url: str,
    redis_db: int = 0,
    **overrides: str,
) -> dict[str, str]:
    """`base` without any worker keys of its own, plus Redis, the LLM server and `overrides`."""
    env = {k: v for k, v in base.items() if not k.startswith(WORKER_ENV_PREFIXES)}
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_port),
        REDIS_PASSWORD=redis_password,
        REDIS_DB=str(redis_db),
        LLM_SERVER_URL=llm_url,
    )
    env.update(overrides)
    return env


@dataclass
class Worker:
    """A celery worker process we started, with its log."""

    proc: Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        """The end of the log: what to show when the worker stopped unexpectedly."""
        return f"{self.log}:\n{self.output()[-chars:]}"


def start_worker(tmp: Path, env: Mapping[str, str], name: str, timeout: float = 60) -> Worker:
    """A worker named `name@<host>`, run from `tmp`; waits for Celery's "ready." line."""
    log = tmp / f"worker-{name}.log"
    argv = worker_argv(hostname=f"{name}@%h", quiet=True)
    worker = Worker(spawn(argv, log, env, cwd=tmp), log, dict(env))
    wait_until(lambda: "ready." in worker.output() or not worker.alive(), timeout, "celery worker")
    if not worker.alive():
        raise ProcessStartError(f"the worker exited at start:\n{worker.output()[-3000:]}")
    return worker
