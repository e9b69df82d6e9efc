"""The one boundary where our errors become OpenAI's error bodies and HTTP statuses.

Every error a route raises (an `ApiError`, FastAPI's request validation, an unknown
route, Redis going away) leaves as `{"error": {"message", "type", "param", "code"}}`,
the shape `openai-python` parses into its exceptions.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from worker.errors import ApiError, ApiUnavailable, InvalidRequest, NotFound

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("kcw.api")


def error_response(exc: ApiError) -> JSONResponse:
    body = {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": body}, status_code=exc.status, headers=headers)


def _validation_error(exc: RequestValidationError) -> ApiError:
    problems = []
    param = None
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body", "query", "path")]
        param = param or (".".join(loc) or None)
        where = ".".join(loc) or "the request body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return InvalidRequest("Invalid request: " + "; ".join(problems), param, "invalid_request")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _ours(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            error: ApiError = NotFound(
                f"Unknown route {request.method} {request.url.path}; see /docs for the routes.",
                code="unknown_url",
            )
        elif exc.status_code == 405:
            error = InvalidRequest(
                f"{request.method} is not allowed on {request.url.path}; see /docs.",
                code="method_not_allowed",
            )
            error.status = 405
        else:
            error = ApiError(str(exc.detail))
            error.status = exc.status_code
        return error_response(error)

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis error on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            ApiUnavailable(
                f"Redis, where batches are kept, is not answering ({type(exc).__name__}); "
                "check REDIS_HOST, REDIS_PORT and REDIS_PASSWORD, and `kcw doctor`."
            )
        )
