"""A real Prometheus (Debian's `prometheus` package) on a free port, scraping what a test names."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from worker.ops.processes import free_port

__all__ = ["Prometheus", "running_prometheus"]


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, expr: str) -> dict[str, Any]:
        """The `data` of an instant query; fails the test on an error status."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]  # type: ignore[no-any-return]

    def wait_up(self, jobs: list[str], within: float = 60) -> None:
        """Until every job's targets were scraped and answered."""
        deadline = time.monotonic() + within
        while True:
            result = self.query("up")["result"]
            up = {r["metric"]["job"] for r in result if r["value"][1] == "1"}
            if set(jobs) <= up:
                return
            assert time.monotonic() < deadline, f"targets not up after {within}s: {result}"
            time.sleep(0.5)


def _config(targets: dict[str, str]) -> str:
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s", "scrape_configs:"]
    for job, target in targets.items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: ['{target}']"]
    return "\n".join(lines) + "\n"


@contextmanager
def running_prometheus(tmp: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job -> host:port) every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("no `prometheus` binary: `apt-get install prometheus` (scripts/system-deps)")
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(_config(targets))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
