"""`kcw serve` / `make api`: run the API on uvicorn in the foreground."""

from __future__ import annotations

import logging

from worker.api.auth import check_bind
from worker.config import ApiSettings

__all__ = ["serve"]


def serve(settings: ApiSettings, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted; refuses a non-loopback address without KCW_API_KEY."""
    import uvicorn

    from worker.api.app import create_app

    overrides = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    check_bind(settings)
    settings.kcw_data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
