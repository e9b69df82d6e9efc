"""`kcw serve` as a process: started on a port with its own data directory, ready when healthy.

The test harness and the benchmarks start the Files and Batch API this way, as they start
redis-server and the workers: a subprocess with its output in a log file. A `kcw serve`
started again with the same `data` directory (and Redis) takes over the batches of one
that died, so `start_api` accepts both, and a port to come back on.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import httpx

from worker.errors import ProcessStartError
from worker.ops.processes import free_port, spawn, stop, wait_until

__all__ = ["ApiServer", "api_answers", "kcw_bin", "start_api"]


def kcw_bin() -> str:
    """The `kcw` command of the running interpreter's environment."""
    return str(Path(sys.executable).with_name("kcw"))


def api_answers(url: str) -> bool:
    """`kcw serve` at `url` answers `GET /health` with 200 (Redis is reachable from it)."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ApiServer:
    """A `kcw serve` process we started, answering on 127.0.0.1:`port`."""

    port: int
    proc: Popen[bytes]
    log: Path
    env: dict[str, str]
    data: Path

    @property
    def url(self) -> str:
        """The base URL, without `/v1`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return self.env.get("KCW_API_KEY", "")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def healthy(self) -> bool:
        """`GET /health` answers 200 (Redis is reachable from the API)."""
        return api_answers(self.url)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.proc, sig)

    def kill(self) -> None:
        """`kill -9`: no shutdown, no lock released, files left as the crash leaves them."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_api(
    tmp: Path,
    env: Mapping[str, str],
    name: str,
    *,
    port: int = 0,
    data: Path | None = None,
    timeout: float = 60,
) -> ApiServer:
    """`kcw serve` run from `tmp` on `port` (a free one if 0), files in `data`; waits for health.

    `env` holds the settings (Redis, LLM server, KCW_API_KEY, BATCH_*); API_PORT and
    KCW_DATA_DIR are set here. The log is `<tmp>/<name>.log`.
    """
    port = port or free_port()
    data = data or tmp / f"{name}-data"
    full_env = {**env, "API_HOST": "127.0.0.1", "API_PORT": str(port), "KCW_DATA_DIR": str(data)}
    log = tmp / f"{name}.log"
    api = ApiServer(port, spawn([kcw_bin(), "serve"], log, full_env, cwd=tmp), log, full_env, data)
    wait_until(lambda: not api.alive() or api.healthy(), timeout, "kcw serve")
    if not api.alive():
        raise ProcessStartError(f"kcw serve exited at start:\n{api.output()[-3000:]}")
    return api
