"""The FastAPI app of `kcw serve`: routes, auth, error bodies, and the batch runner's life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from worker.api import batch_routes, file_routes
from worker.api.auth import require_key
from worker.api.deps import Services
from worker.api.error_bodies import error_response, install_error_handlers
from worker.api.metrics import render, serve_registry
from worker.batches.files import FileStore
from worker.batches.store import BatchStore
from worker.config import ApiSettings
from worker.errors import PayloadTooLarge

__all__ = ["create_app"]

# Room for the multipart framing and the `purpose` field around the file itself.
MULTIPART_OVERHEAD = 64 * 1024


def create_app(settings: ApiSettings, *, run_batches: bool = True) -> FastAPI:
    """The API over `settings`' data directory and Redis; `run_batches` feeds the workers."""
    files = FileStore(settings.kcw_data_dir)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    services = Services(settings, files, BatchStore(client))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner = None
        celery_app = None
        if run_batches:
            from worker.batches.runner import make_runner
            from worker.broker import make_app

            celery_app = make_app(settings, main="kcw-serve")
            runner = make_runner(settings, files, client, celery_app)
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                runner.stop()
            if celery_app is not None:
                celery_app.close()
            client.close()

    app = FastAPI(
        title="kc-worker Batch API",
        summary="OpenAI-compatible Files and Batch API; lines run on kc-worker's Celery workers.",
        lifespan=lifespan,
    )
    app.state.services = services
    install_error_handlers(app)
    auth = [Depends(require_key(settings))]
    app.include_router(file_routes.router, dependencies=auth)
    app.include_router(batch_routes.router, dependencies=auth)

    @app.middleware("http")
    async def refuse_oversized_uploads(request: Request, call_next: Any) -> Response:
        # Refused before the body is read; the upload itself counts its bytes too.
        length = request.headers.get("content-length", "")
        limit = settings.batch_max_bytes + MULTIPART_OVERHEAD
        if request.url.path == "/v1/files" and length.isdigit() and int(length) > limit:
            return error_response(
                PayloadTooLarge(
                    f"The upload is {int(length)} bytes; a batch input file may have at most "
                    f"{settings.batch_max_bytes} (BATCH_MAX_BYTES). Split it into several.",
                    "file",
                )
            )
        response: Response = await call_next(request)
        return response

    @app.get("/health", tags=["health"])
    def health() -> JSONResponse:
        """200 when Redis answers, 503 otherwise (no key needed)."""
        try:
            client.ping()
        except redis.RedisError as exc:
            return JSONResponse({"status": "error", "redis": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    registry = serve_registry(services.batches)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Prometheus metrics: queue depth, jobs running, unfinished batches (no key needed)."""
        body, content_type = render(registry)
        return Response(body, media_type=content_type)

    return app
