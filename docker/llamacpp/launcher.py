"""Start the llama.cpp server kc-worker talks to: llama.cpp's `llama-server` or llama-cpp-python's.

LLAMACPP_ENGINE picks it:

- `server` (the default): llama.cpp's own `llama-server`, which batches requests across
  N_PARALLEL slots. The launcher maps the settings below to its flags and `exec`s it, so the
  server is the process that gets the signals. The binary is LLAMA_SERVER_BIN, else
  `llama-server` on PATH, else the one `make llama-server` builds (scripts/llama-server-env)
  under ~/.cache/kc-worker/ (KCW_LLAMA_SERVER_DIR). Each slot holds N_CTX tokens: the KV cache
  is N_CTX * N_PARALLEL tokens split into one stream per slot, and `/props` reports N_CTX as
  `default_generation_settings.n_ctx` (N_CTX=0: every slot may use the model's training
  context, from one shared pool of that size). llama-server opens its port at once; while
  loading, `/health` and every other route answer 503 {"error": {"message": "Loading model",
  ...}}, and if the model cannot be loaded the process exits (status 1). Any other
  `LLAMA_ARG_*` variable (e.g. LLAMA_ARG_POOLING=mean for embeddings from a chat model)
  reaches llama-server too; the flags set here win over them.
- `python`: llama-cpp-python's OpenAI server, which serves one request at a time. It has no
  `/health`, so this launcher opens the port at once and answers:

      GET /health   503 {"status": "loading"}  while the model loads
                    200 {"status": "ok"}       once it can serve
                    503 {"status": "error"}    if loading failed
      GET /props    the served context length, in llama-server's shape (total_slots 1)

  Every other route (`/v1/models`, `/v1/chat/completions`, ...) is llama-cpp-python's own,
  and answers 503 until the model is ready. CONFIG_FILE (JSON or YAML, llama-cpp-python's
  multi-model `ConfigFileSettings`) replaces the MODEL_* settings; HOST, PORT and LLM_API_KEY
  still apply.

Both answer `GET /health` with 503 while the model loads and 200 {"status": "ok"} once it can
serve. Settings come from the environment: LLAMACPP_ENGINE, MODEL_PATH, DEFAULT_MODEL_PATH,
MODEL_ALIAS, N_CTX, N_PARALLEL (server), N_GPU_LAYERS (-1: all layers), N_THREADS, EMBEDDING,
CHAT_FORMAT (python), CONFIG_FILE (python), HOST, PORT, LLM_API_KEY, LLAMA_SERVER_BIN (server).

It runs the same way on the host (`make up`) and in Dockerfile.llamacpp.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("kcw.launcher")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# The llama-cpp-python release whose vendored llama.cpp `make llama-server` builds; keep it equal
# to LLAMA_CPP_PYTHON_VERSION in scripts/llama-server-env and Dockerfile.llamacpp.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
ENGINES = ("server", "python")


class LauncherConfigError(ValueError):
    """An environment variable has a value the launcher cannot use."""


class MemoryLimitError(LauncherConfigError):
    """The container's memory limit cannot hold the model and its KV cache."""


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LauncherConfigError(f"{name}={raw!r} is not an integer") from None


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise LauncherConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _env_engine(environ: Mapping[str, str]) -> str:
    raw = environ.get("LLAMACPP_ENGINE", "").strip().lower()
    if not raw:
        return "server"
    if raw not in ENGINES:
        raise LauncherConfigError(
            f"LLAMACPP_ENGINE={raw!r} is not an engine: use server (llama.cpp's llama-server) "
            "or python (llama-cpp-python's server)"
        )
    return raw


@dataclass(frozen=True)
class LauncherConfig:
    """The launcher's settings, read from the environment."""

    engine: str
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
    n_parallel: int = 8
    config_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LauncherConfig:
        """The settings from `environ` (default: this process's environment)."""
        env = os.environ if environ is None else environ
        engine = _env_engine(env)
        default = env.get("DEFAULT_MODEL_PATH", "").strip()
        threads = _env_int(env, "N_THREADS", 0)
        n_parallel = _env_int(env, "N_PARALLEL", 8)
        if n_parallel < 1:
            raise LauncherConfigError(f"N_PARALLEL={n_parallel} must be 1 or more (server slots)")
        n_ctx = _env_int(env, "N_CTX", 4096)
        if n_ctx < 0 and engine == "server":
            raise LauncherConfigError(f"N_CTX={n_ctx} must be 0 (the model's own) or more tokens")
        config_file = env.get("CONFIG_FILE", "").strip()
        if config_file and engine != "python":
            raise LauncherConfigError(
                f"CONFIG_FILE={config_file} is llama-cpp-python's multi-model file: set "
                "LLAMACPP_ENGINE=python to use it, or unset CONFIG_FILE"
            )
        return cls(
            engine=engine,
            model_path=Path(env.get("MODEL_PATH", "/models/model.gguf")),
            default_model_path=Path(default) if default else None,
            model_alias=env.get("MODEL_ALIAS", "").strip() or None,
            n_ctx=n_ctx,
            n_gpu_layers=_env_int(env, "N_GPU_LAYERS", 0),
            n_threads=threads or None,
            embedding=_env_bool(env, "EMBEDDING", False),
            chat_format=env.get("CHAT_FORMAT", "").strip() or None,
            host=env.get("HOST", "0.0.0.0"),
            port=_env_int(env, "PORT", 8000),
            api_key=env.get("LLM_API_KEY", "").strip() or None,
            n_parallel=n_parallel,
            config_file=Path(config_file) if config_file else None,
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


def llama_server_dir(environ: Mapping[str, str]) -> Path:
    """Where scripts/llama-server-env builds llama-server (KCW_LLAMA_SERVER_DIR overrides)."""
    override = environ.get("KCW_LLAMA_SERVER_DIR", "").strip()
    if override:
        return Path(override)
    cache = environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "kc-worker" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_llama_server(environ: Mapping[str, str]) -> Path:
    """LLAMA_SERVER_BIN, else `llama-server` on PATH, else the `make llama-server` build."""
    explicit = environ.get("LLAMA_SERVER_BIN", "").strip()
    if explicit:
        if _executable(Path(explicit)):
            return Path(explicit)
        raise LauncherConfigError(
            f"LLAMA_SERVER_BIN={explicit} is not an executable file: point it at a llama-server "
            "binary, or unset it and run `make llama-server`"
        )
    on_path = shutil.which("llama-server", path=environ.get("PATH", os.defpath))
    if on_path:
        return Path(on_path)
    built = llama_server_dir(environ) / "bin" / "llama-server"
    if _executable(built):
        return built
    raise LauncherConfigError(
        f"llama-server not found (LLAMACPP_ENGINE=server): run `make llama-server` to build it "
        f"into {built.parent}, set LLAMA_SERVER_BIN to a llama-server binary, or set "
        "LLAMACPP_ENGINE=python for llama-cpp-python's server"
    )


def llama_server_argv(config: LauncherConfig, binary: Path, model: Path) -> list[str]:
    """llama-server's command line for these settings."""
    argv = [
        str(binary),
        "--model",
        str(model),
        # The worker sends the id from /v1/models; the same stem as the python engine's.
        "--alias",
        config.model_alias or model.stem,
        "--host",
        config.host,
        "--port",
        str(config.port),
        # --ctx-size is the whole KV cache. Without --kv-unified it is split into one stream
        # per slot, so every slot holds N_CTX tokens and /props reports N_CTX as its n_ctx.
        # With 0 (the model's own size) one unified pool lets each slot use all of it.
        "--ctx-size",
        str(config.n_ctx * config.n_parallel),
        "--parallel",
        str(config.n_parallel),
        "--kv-unified" if config.n_ctx == 0 else "--no-kv-unified",
        "--cont-batching",
        "--jinja",
        # llama-server offloads every layer it can by default; N_GPU_LAYERS=0 means the CPU.
        "--n-gpu-layers",
        "all" if config.n_gpu_layers < 0 else str(config.n_gpu_layers),
        "--metrics",
        "--no-webui",
    ]
    if config.n_threads:
        argv += ["--threads", str(config.n_threads)]
    if config.embedding:
        argv.append("--embeddings")
    return argv


def llama_server_env(config: LauncherConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for llama-server: the API key goes here, where `ps` does not show it."""
    env = dict(environ)
    env.pop("LLAMA_API_KEY", None)
    if config.api_key:
        env["LLAMA_API_KEY"] = config.api_key
    return env


# GGUF metadata value types (gguf.md): their struct formats; 8 is a string, 9 an array.
GGUF_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
# Keys `gguf_metadata` keeps: the ones the KV cache size follows from.
GGUF_KEYS = (
    "general.architecture",
    ".block_count",
    ".context_length",
    ".embedding_length",
    ".attention.head_count",
    ".attention.head_count_kv",
    ".attention.key_length",
    ".attention.value_length",
)


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file that sizes its KV cache (arrays are skipped)."""
    with path.open("rb") as f:

        def read(fmt: str) -> Any:
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))[0]

        def string() -> str:
            return f.read(read("Q")).decode("utf-8", "replace")

        def skip(kind: int) -> None:
            if kind == 8:
                f.seek(read("Q"), 1)
            elif kind == 9:
                inner, count = read("I"), read("Q")
                if inner in GGUF_SCALARS:
                    f.seek(struct.calcsize("<" + GGUF_SCALARS[inner]) * count, 1)
                else:
                    for _ in range(count):
                        skip(inner)
            else:
                f.seek(struct.calcsize("<" + GGUF_SCALARS[kind]), 1)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        found: dict[str, Any] = {}
        for _ in range(read("Q")):
            key, kind = string(), read("I")
            if key.endswith(GGUF_KEYS) and (kind == 8 or kind in GGUF_SCALARS):
                found[key] = string() if kind == 8 else read(GGUF_SCALARS[kind])
            else:
                skip(kind)
        return found


def kv_cache_bytes(meta: Mapping[str, Any], n_ctx_total: int) -> int:
    """Bytes of llama.cpp's f16 KV cache for `n_ctx_total` tokens (0: the model's context)."""
    arch = meta["general.architecture"]
    layers = int(meta[f"{arch}.block_count"])
    embd = int(meta[f"{arch}.embedding_length"])
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
    k_len = int(meta.get(f"{arch}.attention.key_length", embd // heads))
    v_len = int(meta.get(f"{arch}.attention.value_length", k_len))
    tokens = n_ctx_total or int(meta.get(f"{arch}.context_length", 0))
    return layers * tokens * kv_heads * (k_len + v_len) * 2


def memory_limit(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This process's cgroup memory limit in bytes (v2, else v1), or None without one."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() and len(text) < 18 else None
    return None


def check_memory(config: LauncherConfig, model: Path, limit: int | None) -> None:
    """Refuse a memory limit below the weights plus the KV cache: the kernel would kill us.
    On the CPU only: layers offloaded to a GPU keep their weights and cache in its memory."""
    if limit is None or config.n_gpu_layers != 0:
        return
    try:
        meta = gguf_metadata(model)
        kv = kv_cache_bytes(meta, config.n_ctx * config.n_parallel)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        log.warning("could not size %s from its metadata (%s); memory not checked", model, exc)
        return
    weights = model.stat().st_size
    need = weights + kv
    log.info(
        "memory: limit %d MiB; model %d MiB + KV cache %d MiB (N_CTX=%d x N_PARALLEL=%d)",
        limit >> 20,
        weights >> 20,
        kv >> 20,
        config.n_ctx,
        config.n_parallel,
    )
    if need > limit:
        raise MemoryLimitError(
            f"the memory limit of this container ({limit >> 20} MiB) is too small for "
            f"{model.name}: its weights ({weights >> 20} MiB) and KV cache ({kv >> 20} MiB for "
            f"N_CTX={config.n_ctx} x N_PARALLEL={config.n_parallel}) need {need >> 20} MiB before "
            "llama.cpp's working buffers. Raise LLM_MEMORY_LIMIT in .env (2-3x the model file "
            "plus the KV cache), or lower N_CTX or N_PARALLEL"
        )


def exec_llama_server(config: LauncherConfig) -> NoReturn:
    """Replace this process with llama-server (it then gets the signals directly)."""
    binary = find_llama_server(os.environ)
    model = config.resolve_model()
    check_memory(config, model, memory_limit())
    if config.chat_format:
        log.warning(
            "CHAT_FORMAT=%s applies to LLAMACPP_ENGINE=python only; llama-server uses the "
            "model's own chat template",
            config.chat_format,
        )
    argv = llama_server_argv(config, binary, model)
    log.info(
        "starting llama-server: %d slots of %d tokens; %s",
        config.n_parallel,
        config.n_ctx,
        shlex.join(argv),
    )
    os.execve(binary, argv, llama_server_env(config, os.environ))


def read_config_file(config: LauncherConfig) -> tuple[Any, list[Any]]:
    """llama-cpp-python's server and model settings from CONFIG_FILE (JSON or YAML)."""
    from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

    path = config.config_file
    assert path is not None
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: CONFIG_FILE={path}")
    text = path.read_text()
    if path.suffix in {".yaml", ".yml"}:
        import yaml  # type: ignore[import-untyped, unused-ignore]

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    settings = ConfigFileSettings.model_validate(data)
    if not settings.models:
        raise LauncherConfigError(f"CONFIG_FILE={path} lists no models")
    server = ServerSettings.model_validate(
        {
            **settings.model_dump(exclude={"models"}),
            # The launcher owns the socket; a queue must not let one request cut off another.
            "host": config.host,
            "port": config.port,
            "interrupt_requests": False,
            **({"api_key": config.api_key} if config.api_key else {}),
        }
    )
    return server, list(settings.models)


class Launcher:
    """An ASGI app: answers /health and /props itself, and hands the rest to llama-cpp-python."""

    def __init__(self, config: LauncherConfig) -> None:
        self.config = config
        self.state = "loading"
        self.error = ""
        self.n_ctx = 0
        self.model_file = ""
        self.model_alias = ""
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
        if cfg.config_file is not None:
            server_settings, models = read_config_file(cfg)
            self._serve(server_app, server_settings, models)
            return
        model = cfg.resolve_model()
        threads: dict[str, Any] = {"n_threads": cfg.n_threads} if cfg.n_threads else {}
        model_settings = ModelSettings(
            model=str(model),
            model_alias=cfg.model_alias or model.stem,
            n_ctx=cfg.n_ctx,
            n_gpu_layers=cfg.n_gpu_layers,
            embedding=cfg.embedding,
            chat_format=cfg.chat_format,
            verbose=False,
            **threads,
        )
        server_settings = ServerSettings(
            host=cfg.host,
            port=cfg.port,
            api_key=cfg.api_key,
            # The default lets a new request cut off a running one; a queue must not.
            interrupt_requests=False,
        )
        self._serve(server_app, server_settings, [model_settings])

    def _serve(self, server_app: Any, server_settings: Any, models: list[Any]) -> None:
        # The first model is llama-cpp-python's default: /props describes it.
        self.model_file = str(models[0].model)
        self.model_alias = models[0].model_alias or Path(self.model_file).stem
        inner = server_app.create_app(server_settings=server_settings, model_settings=models)
        proxy = server_app._llama_proxy
        llama = proxy(None) if proxy is not None else None
        self.n_ctx = int(llama.n_ctx()) if llama is not None else self.config.n_ctx
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
            "model_alias": self.model_alias,
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
        if config.engine == "server":
            exec_llama_server(config)
    except LauncherConfigError as exc:
        log.error("%s", exc)
        return 2
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 1
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
