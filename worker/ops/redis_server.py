"""redis-server as a queue wants it: its config file, and a server started on a free port.

The config keeps the password out of `ps`, binds loopback only, and (by default)
turns on the append-only file so that a restart loses at most a second of writes.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.config import WorkerSettings
from worker.errors import ProcessStartError
from worker.ops.processes import free_port, wait_until

__all__ = ["RedisServer", "redis_binary", "redis_conf", "start_redis"]

INSTALL_HINT = (
    "redis-server is not installed: `sudo apt-get install -y redis-server` "
    "(Debian/Ubuntu) or `brew install redis` (macOS)"
)


def redis_binary() -> str:
    """The path of redis-server, or `ProcessStartError` saying how to install it."""
    binary = shutil.which("redis-server")
    if not binary:
        raise ProcessStartError(INSTALL_HINT)
    return binary


def redis_conf(
    port: int,
    data_dir: Path,
    password: str,
    *,
    appendonly: bool = True,
    bind: str = "127.0.0.1 -::1",
    maxmemory: str = "0",
) -> str:
    """The text of a redis.conf: loopback, no RDB snapshots, AOF as asked, a password."""
    lines = [f"port {port}", f"bind {bind}", f"dir {data_dir}", "save ''"]
    if appendonly:
        lines += ["appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"]
    else:
        lines.append("appendonly no")
    if maxmemory not in ("", "0", "auto"):  # auto follows a container's limit; none here
        lines.append(f"maxmemory {maxmemory}")
    if password:
        quoted = password.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'requirepass "{quoted}"')
    return "\n".join(lines) + "\n"


@dataclass
class RedisServer:
    """A redis-server we started, on 127.0.0.1."""

    port: int
    password: str
    proc: subprocess.Popen[bytes]

    def client(self, password: str | None = None, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, password=password or self.password, db=db)

    def worker_settings(self, db: int = 0) -> WorkerSettings:
        """Settings that point a worker or a submitter at this server (not read from .env)."""
        return WorkerSettings(
            _env_file=None,  # type: ignore[call-arg]
            redis_host="127.0.0.1",
            redis_port=self.port,
            redis_db=db,
            redis_password=self.password,  # type: ignore[arg-type]
        )

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False


def start_redis(tmp: Path, password: str, port: int = 0, appendonly: bool = False) -> RedisServer:
    """redis-server on 127.0.0.1 with a password, data in `tmp`; waits until it answers.

    Started again with the same `port` and `tmp`, it reloads what it persisted.
    """
    binary = redis_binary()
    port = port or free_port()
    conf = tmp / f"redis-{port}.conf"
    conf.write_text(redis_conf(port, tmp, password, appendonly=appendonly, bind="127.0.0.1"))
    conf.chmod(0o600)
    proc = subprocess.Popen(
        [binary, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = RedisServer(port, password, proc)
    wait_until(server.answers, 20, "redis-server")
    return server
