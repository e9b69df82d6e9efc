"""A minimal OpenAI-compatible stub that answers at once, for measuring per-job overhead only.

    python -m bench.instant_server --port 8123

Routes: GET /health, GET /v1/models (one model, owned_by "bench"), POST /v1/chat/completions
(a fixed short completion), POST /extras/tokenize (a word count). Never use it for anything
but the overhead measurement in `bench.run --backend instant`.
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL = "bench-instant"
ANSWER = "OK, done."
COMPLETION_TOKENS = 4
_ids = itertools.count()


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def models(_: Request) -> JSONResponse:
    entry = {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}
    return JSONResponse({"object": "list", "data": [entry]})


async def chat(request: Request) -> JSONResponse:
    body: dict[str, Any] = await request.json()
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return JSONResponse(
        {
            "id": f"chatcmpl-bench-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": prompt_tokens + COMPLETION_TOKENS,
            },
        }
    )


async def tokenize(request: Request) -> JSONResponse:
    body: dict[str, Any] = await request.json()
    text = str(body.get("input") or body.get("prompt") or "")
    tokens = list(range(len(text.split())))
    return JSONResponse({"tokens": tokens, "count": len(tokens)})


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/extras/tokenize", tokenize, methods=["POST"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
