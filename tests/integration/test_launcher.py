"""The llama.cpp launcher: the /health contract, /v1/models, /props and the API key."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.processes import MODEL, LLMServer, start_launcher, wait_until


def test_health_is_ok_and_models_lists_the_default_model(llm_server: LLMServer) -> None:
    health = llm_server.health()
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    models = httpx.get(f"{llm_server.url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_props_reports_the_real_context_length(llm_server: LLMServer) -> None:
    props = httpx.get(f"{llm_server.url}/props", timeout=10).json()
    assert props["default_generation_settings"]["n_ctx"] == 4096


def test_health_says_loading_until_the_model_is_read_then_error_on_a_bad_file(
    tmp_path: Path,
) -> None:
    # A FIFO holds the loader inside its open() until we write, so "loading" lasts
    # as long as the test needs; garbage written to it then makes the load fail.
    fifo = tmp_path / "slow.gguf"
    os.mkfifo(fifo)
    server = start_launcher(tmp_path, model=fifo, wait=False)
    try:
        loading = server.health()
        assert loading.status_code == 503
        assert loading.json() == {"status": "loading"}
        blocked = httpx.get(f"{server.url}/v1/models", timeout=5)
        assert blocked.status_code == 503
        assert "loading" in blocked.json()["error"]["message"]

        def feed_garbage() -> None:
            with contextlib.suppress(BrokenPipeError):  # the loader stops reading early
                fifo.write_bytes(b"not a gguf file" * 100)

        writer = threading.Thread(target=feed_garbage, daemon=True)
        writer.start()
        wait_until(lambda: server.health().json()["status"] != "loading", 60, "load failure")
        writer.join(10)
        failed = server.health()
        assert failed.status_code == 503
        assert failed.json()["status"] == "error"
    finally:
        server.stop()


def test_missing_model_file_is_a_503_that_names_model_path(tmp_path: Path) -> None:
    server = start_launcher(tmp_path, model=tmp_path / "nope.gguf", wait=False)
    try:
        wait_until(lambda: server.health().json()["status"] == "error", 30, "error state")
        body = server.health().json()
        assert "MODEL_PATH" in body["error"]
        assert "nope.gguf" in body["error"]
    finally:
        server.stop()


def test_missing_model_falls_back_to_the_default_and_says_so(tmp_path: Path) -> None:
    server = start_launcher(tmp_path, model=tmp_path / "absent.gguf", DEFAULT_MODEL_PATH=str(MODEL))
    try:
        assert server.health().json() == {"status": "ok"}
        assert "serving the default model" in server.log.read_text()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> LLMServer:
    server = start_launcher(tmp_path_factory.mktemp("keyed"), LLM_API_KEY="s3cret-test-key")
    yield server  # type: ignore[misc]
    server.stop()


def test_api_key_guards_the_openai_routes_but_not_health(keyed_server: LLMServer) -> None:
    assert keyed_server.health().status_code == 200
    url = f"{keyed_server.url}/v1/models"
    assert httpx.get(url, timeout=10).status_code == 401
    ok = httpx.get(url, headers={"Authorization": "Bearer s3cret-test-key"}, timeout=10)
    assert ok.status_code == 200
