"""The `/metrics` HTTP endpoint of a worker process or `kcw serve`.

Several workers on one host each take the first free port from WORKER_METRICS_PORT up,
so none fails to start over a busy port; the log says which port each one took.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import REGISTRY

__all__ = ["PORT_TRIES", "serve_metrics"]

log = logging.getLogger("kcw.metrics")
# Ports tried from the configured one up: room for that many workers on one host.
PORT_TRIES = 16


def _registry() -> CollectorRegistry:
    """The default registry, or the multiprocess one when prefork children write files."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def serve_metrics(host: str, port: int, what: str = "worker") -> int | None:
    """Serve `/metrics` on `host` at the first free port from `port`; None when `port` is 0."""
    if port == 0:
        return None
    registry = _registry()
    for candidate in range(port, min(port + PORT_TRIES, 65536)):
        try:
            start_http_server(candidate, addr=host, registry=registry)
        except OSError:
            continue
        log.info("%s metrics at http://%s:%d/metrics", what, host, candidate)
        return candidate
    log.warning(
        "%s metrics are off: ports %d-%d on %s are all in use; set WORKER_METRICS_PORT to a "
        "free port (0 turns metrics off)",
        what,
        port,
        port + PORT_TRIES - 1,
        host,
    )
    return None
