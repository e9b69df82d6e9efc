"""Starting, watching and stopping local processes: ports, readiness waits, pid files.

The local stack (`kcw up`), the test harness and the benchmarks all start their
redis-server, LLM servers and workers through this module and the ones beside it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from worker.errors import ProcessStartError

__all__ = [
    "free_port",
    "pid_alive",
    "port_in_use",
    "spawn",
    "spawn_detached",
    "stop",
    "stop_detached",
    "wait_until",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll `predicate` until it is true; `ProcessStartError` naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise ProcessStartError(f"{what} not ready after {timeout}s")


def spawn(
    argv: list[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` with its output (stdout and stderr) written to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, env=dict(env or os.environ), cwd=cwd
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Send `sig`, wait up to `timeout` seconds, then kill."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def pid_alive(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def spawn_detached(run_dir: Path, name: str, argv: list[str], env: Mapping[str, str]) -> int:
    """Start `argv` in its own session, logging to `<run_dir>/<name>.log`, with a pid file."""
    run_dir.mkdir(exist_ok=True)
    log = (run_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=dict(env), start_new_session=True
    )
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop_detached(run_dir: Path, name: str, out: TextIO) -> None:
    """Stop what `spawn_detached` started under `name` (TERM, then KILL after 10 s)."""
    pid_file = run_dir / f"{name}.pid"
    pid = pid_alive(pid_file)
    if pid:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if not pid_alive(pid_file):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        out.write(f"stopped {name} (pid {pid})\n")
    pid_file.unlink(missing_ok=True)
