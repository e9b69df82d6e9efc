"""Run llama-cpp-python's OpenAI server with a readiness route, as llama.cpp's llama-server has.

llama-cpp-python keeps its port closed until the model is loaded and has no
`/health`. This launcher opens the port at once and answers:

    GET /health   503 {"status": "loading"}  while the model loads
                  200 {"status": "ok"}       once it can serve
                  503 {"status": "error"}    if loading failed
    GET /props    the served context length, in llama-server's shape

Every other route (`/v1/models`, `/v1/chat/completions`, ...) is llama-cpp-python's
own, and answers 503 until the model is ready. Settings come from the environment:
MODEL_PATH, DEFAULT_MODEL_PATH, MODEL_ALIAS, N_CTX, N_GPU_LAYERS, N_THREADS,
EMBEDDING, CHAT_FORMAT, HOST, PORT, LLM_API_KEY.

It runs the same way on the host (`make up`) and in Dockerfile.llamacpp.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kcw.launcher")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LauncherConfigError(ValueError):
    """An environment variable has a value the launcher cannot use."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LauncherConfigError(f"{name}={raw!r} is not an integer") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise LauncherConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class LauncherConfig:
    """The launcher's settings, read from the environment."""

    model_path: Path
    default_model_path: Path | None
    model_alias: str | None
    n_ctx: int
    n_gpu_layers: int
    n_threads: int | None
    embedding: bool
    chat_format: str | None
    host: str
    port: int
    api_key: str | None

    @classmethod
    def from_env(cls) -> LauncherConfig:
        default = os.environ.get("DEFAULT_MODEL_PATH", "").strip()
        threads = _env_int("N_THREADS", 0)
        return cls(
            model_path=Path(os.environ.get("MODEL_PATH", "/models/model.gguf")),
            default_model_path=Path(default) if default else None,
            model_alias=os.environ.get("MODEL_ALIAS", "").strip() or None,
            n_ctx=_env_int("N_CTX", 4096),
            n_gpu_layers=_env_int("N_GPU_LAYERS", 0),
            n_threads=threads or None,
            embedding=_env_bool("EMBEDDING", False),
            chat_format=os.environ.get("CHAT_FORMAT", "").strip() or None,
            host=os.environ.get("HOST", "0.0.0.0"),
            port=_env_int("PORT", 8000),
            api_key=os.environ.get("LLM_API_KEY", "").strip() or None,
        )

    def resolve_model(self) -> Path:
        """MODEL_PATH if it exists, else the bundled default model (said in the log)."""
        # exists() rather than is_file(): a named pipe or a device is a valid source too.
        if self.model_path.exists() and not self.model_path.is_dir():
            return self.model_path
        if self.default_model_path and self.default_model_path.is_file():
            log.warning(
                "MODEL_PATH %s does not exist; serving the default model %s instead",
                self.model_path,
                self.default_model_path,
            )
            return self.default_model_path
        raise FileNotFoundError(
            f"model file not found: MODEL_PATH={self.model_path}. Put a GGUF file there "
            "(`make model` fetches the default) or change MODEL_PATH."
        )


class Launcher:
    """An ASGI app: answers /health and /props itself, and hands the rest to llama-cpp-python."""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config
        self.state = "loading"
        self.error = ""
        self.n_ctx = 0
        self.model_file = ""
        self.inner: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    def load(self) -> None:
        """Load the model and build llama-cpp-python's app; run in a background thread."""
        started = time.monotonic()
        try:
            self._load()
        except Exception as exc:
            self.error = f"{exc.__class__.__name__}: {exc}"
            self.state = "error"
            log.error("model failed to load: %s", self.error)
            return
        self.state = "ok"
        log.info(
            "model %s ready in %.1fs (n_ctx=%d); serving on %s:%d",
            self.model_file,
            time.monotonic() - started,
            self.n_ctx,
            self.config.host,
            self.config.port,
        )

    def _load(self) -> None:
        from llama_cpp.server import app as server_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings

        cfg = self.config
        model = cfg.resolve_model()
        self.model_file = str(model)
        model_settings = ModelSettings(
            model=str(model),
            model_alias=cfg.model_alias or model.stem,
            n_ctx=cfg.n_ctx,
            n_gpu_layers=cfg.n_gpu_layers,
            embedding=cfg.embedding,
            chat_format=cfg.chat_format,
            verbose=False,
            **({"n_threads": cfg.n_threads} if cfg.n_threads else {}),
        )
        server_settings = ServerSettings(
            host=cfg.host,
            port=cfg.port,
            api_key=cfg.api_key,
            # The default lets a new request cut off a running one; a queue must not.
            interrupt_requests=False,
        )
        inner = server_app.create_app(
            server_settings=server_settings, model_settings=[model_settings]
        )
        proxy = server_app._llama_proxy
        llama = proxy(None) if proxy is not None else None
        self.n_ctx = int(llama.n_ctx()) if llama is not None else cfg.n_ctx
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/health":
            await self._health(send)
        elif scope["type"] == "http" and path == "/props" and self.state == "ok":
            await _send_json(send, 200, self._props())
        elif self.inner is None:
            await self._not_ready(send)
        else:
            await self.inner(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _health(self, send: Send) -> None:
        if self.state == "ok":
            await _send_json(send, 200, {"status": "ok"})
        elif self.state == "loading":
            await _send_json(send, 503, {"status": "loading"}, retry_after=2)
        else:
            await _send_json(send, 503, {"status": "error", "error": self.error})

    def _props(self) -> dict[str, Any]:
        return {
            "default_generation_settings": {"n_ctx": self.n_ctx},
            "total_slots": 1,
            "model_path": self.model_file,
            "model_alias": self.config.model_alias or Path(self.model_file).stem,
            "embedding": self.config.embedding,
        }

    async def _not_ready(self, send: Send) -> None:
        if self.state == "loading":
            body = {"error": {"message": "model is loading", "type": "unavailable", "code": 503}}
            await _send_json(send, 503, body, retry_after=2)
        else:
            message = f"model failed to load: {self.error}"
            body = {"error": {"message": message, "type": "unavailable", "code": 503}}
            await _send_json(send, 503, body)


async def _send_json(send: Send, status: int, body: Any, retry_after: int | None = None) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = LauncherConfig.from_env()
    except LauncherConfigError as exc:
        log.error("%s", exc)
        return 2
    import uvicorn

    launcher = Launcher(config)
    threading.Thread(target=launcher.load, name="model-loader", daemon=True).start()
    log.info(
        "listening on %s:%d; /health says 'loading' until the model is ready",
        config.host,
        config.port,
    )
    uvicorn.run(launcher, host=config.host, port=config.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
