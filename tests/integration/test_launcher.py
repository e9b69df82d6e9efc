"""The llama.cpp launcher, with each engine: the /health contract, /v1/models, /props, the key.

Both engines answer 503 while the model loads and 200 {"status": "ok"} once it serves. When
loading fails, the llama-cpp-python engine keeps answering 503 {"status": "error"}, while
llama-server exits with the reason in its log (compose and `make up` report it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import MODEL, LLMServer, start_launcher, wait_until
from worker.errors import ProcessStartError
from worker.ops import llm_servers

ENGINES = ["server", "python"]


@pytest.fixture(scope="module", params=ENGINES)
def engine_server(request: pytest.FixtureRequest) -> LLMServer:
    """The session's server for each engine."""
    name = "llm_server" if request.param == "server" else "python_llm_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_health_is_ok_and_models_lists_the_default_model(engine_server: LLMServer) -> None:
    health = engine_server.health()
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    models = httpx.get(f"{engine_server.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_props_reports_the_context_length_of_one_request(engine_server: LLMServer) -> None:
    props = httpx.get(f"{engine_server.url}/props", timeout=10).json()
    assert props["default_generation_settings"]["n_ctx"] == 4096
    assert props["total_slots"] >= 1


def test_llama_server_has_slots_and_the_python_engine_one(
    llm_server: LLMServer, python_llm_server: LLMServer
) -> None:
    assert httpx.get(f"{llm_server.url}/props", timeout=10).json()["total_slots"] == 8
    assert httpx.get(f"{python_llm_server.url}/props", timeout=10).json()["total_slots"] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_health_says_loading_until_the_model_is_read(tmp_path: Path, engine: str) -> None:
    # A FIFO holds the loader inside its open() until we write, so "loading" lasts
    # as long as the test needs; garbage written to it then makes the load fail.
    fifo = tmp_path / "slow.gguf"
    os.mkfifo(fifo)
    server = start_launcher(tmp_path, model=fifo, wait=False, LLAMACPP_ENGINE=engine)
    try:
        loading = server.health()
        assert loading.status_code == 503
        assert "loading" in loading.text.lower()
        blocked = httpx.get(f"{server.url}/v1/models", timeout=5)
        assert blocked.status_code == 503
        assert "loading" in blocked.json()["error"]["message"].lower()

        if engine == "server":
            return  # llama-server opens the file twice; the garbage case is the next test

        def feed_garbage() -> None:
            with contextlib.suppress(BrokenPipeError):  # the loader stops reading early
                fifo.write_bytes(b"not a gguf file" * 100)

        writer = threading.Thread(target=feed_garbage, daemon=True)
        writer.start()
        wait_until(lambda: server.health().json()["status"] != "loading", 60, "load failure")
        failed = server.health()
        assert failed.status_code == 503
        assert failed.json()["status"] == "error"
        writer.join(10)
    finally:
        server.stop()


def test_llama_server_exits_with_the_reason_when_the_model_is_not_gguf(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file" * 100)
    server = start_launcher(tmp_path, model=garbage, wait=False, port_wait=False)
    try:
        assert server.proc.wait(60) != 0
        assert "failed to load model" in server.log.read_text()
    finally:
        server.stop()


def test_a_server_that_dies_while_loading_is_an_error_with_its_log(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file" * 100)
    with pytest.raises(ProcessStartError) as raised:
        llm_servers.start_launcher(tmp_path, garbage)
    message = str(raised.value)
    assert "exited with 1 before it was ready" in message
    assert "failed to load model" in message  # the end of its log
    assert "launcher-" in message  # and where the whole log is


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_model_file_is_an_error_that_names_model_path(tmp_path: Path, engine: str) -> None:
    server = start_launcher(
        tmp_path,
        model=tmp_path / "nope.gguf",
        wait=False,
        port_wait=engine == "python",
        LLAMACPP_ENGINE=engine,
    )
    try:
        if engine == "python":
            wait_until(lambda: server.health().json()["status"] == "error", 30, "error state")
            said = server.health().json()["error"]
        else:
            assert server.proc.wait(30) != 0
            said = server.log.read_text()
        assert "MODEL_PATH" in said
        assert "nope.gguf" in said
    finally:
        server.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_model_falls_back_to_the_default_and_says_so(tmp_path: Path, engine: str) -> None:
    server = start_launcher(
        tmp_path,
        model=tmp_path / "absent.gguf",
        DEFAULT_MODEL_PATH=str(MODEL),
        LLAMACPP_ENGINE=engine,
    )
    try:
        assert server.health().json() == {"status": "ok"}
        assert "serving the default model" in server.log.read_text()
    finally:
        server.stop()


@pytest.fixture(scope="module", params=ENGINES)
def keyed_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = start_launcher(
        tmp_path_factory.mktemp("keyed"),
        LLM_API_KEY="s3cret-test-key",
        LLAMACPP_ENGINE=request.param,
    )
    yield server
    server.stop()


def test_api_key_guards_the_openai_routes_but_not_health(keyed_server: LLMServer) -> None:
    assert keyed_server.health().status_code == 200
    url = f"{keyed_server.url}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    ok = httpx.get(url, headers={"Authorization": "Bearer s3cret-test-key"}, timeout=10)
    assert ok.status_code == 200
