"""A reverse proxy that times every request it relays to the LLM server, by job id.

    python -m bench.timing_proxy --port P --upstream http://127.0.0.1:8000

Workers pointed at it send `X-Request-Id` (the job id) with each request; `GET /_timings`
returns `[{"id", "path", "start", "end", "status"}]`, so the bench can compare an
interactive job's wait with the latency of the batch requests served at the same moment.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["make_app"]

HOP = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


def make_app(upstream: str) -> Starlette:
    """The proxy app: `/_timings` plus every other path relayed to `upstream`."""
    timings: list[dict[str, Any]] = []
    client = httpx.AsyncClient(
        base_url=upstream,
        timeout=3600,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
    )

    async def relay(request: Request) -> Response:
        start = time.time()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        reply = await client.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
        if request.method == "POST":
            timings.append(
                {
                    "id": request.headers.get("x-request-id", ""),
                    "path": request.url.path,
                    "start": start,
                    "end": time.time(),
                    "status": reply.status_code,
                }
            )
        out = {k: v for k, v in reply.headers.items() if k.lower() not in HOP}
        out.pop("content-encoding", None)
        return Response(reply.content, reply.status_code, out)

    async def listing(_: Request) -> JSONResponse:
        return JSONResponse(timings)

    methods = ["GET", "POST", "DELETE", "PUT"]
    routes = [
        Route("/_timings", listing),
        Route("/{path:path}", relay, methods=methods),
    ]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
