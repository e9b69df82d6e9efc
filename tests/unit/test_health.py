"""`kcw doctor`'s probes: what each finds, and the fix each failure names.

The LLM server is a fake in memory, reached through an injected `LLMClient`; Redis is
probed at a loopback port where nothing listens (a refused connection, no server).
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.unit.conftest import MODEL, SERVER_URL
from worker.config import WorkerSettings, load_settings
from worker.ops.health import Check, check_llm_server, check_redis, check_served_model

if TYPE_CHECKING:
    from tests.unit.conftest import ClientFactory, FakeServer, ServerFactory

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 3.0
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.42
"""


def probe(server: FakeServer, make_client: ClientFactory, **overrides: object) -> Check:
    client = make_client(server, **overrides)
    return check_llm_server(client.settings, client)


def test_a_ready_llamacpp_server_is_ok_with_backend_model_context_and_slots(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=None)
    server.reply("GET", "/health", 200, {"status": "ok"})
    server.reply(
        "GET",
        "/props",
        200,
        {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4, "build_info": "b1"},
    )

    check = probe(server, make_client)

    assert check.status == "ok"
    assert check.ok
    assert check.detail == (
        f"{SERVER_URL}: ready; backend llamacpp (llama-server), model {MODEL}, "
        "context 4096 tokens, 4 slots"
    )
    assert check.fix == ""
    assert check.facts == {"backend": "llamacpp", "model": MODEL, "context": 4096}
    assert server.calls("GET", "/metrics") == []


def test_a_server_without_a_known_context_says_unknown(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=None)
    server.reply("GET", "/health", 200, {"status": "ok"})

    check = probe(server, make_client)

    assert check.ok
    assert "backend llamacpp (llama-cpp-python)" in check.detail
    assert check.detail.endswith("context unknown")


def test_a_loading_server_is_wait_with_the_health_route_to_watch(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/health", 503, {"status": "loading"})

    check = probe(server, make_client)

    assert check.status == "wait"
    assert not check.ok
    assert "still loading its model (HTTP 503" in check.detail
    assert f"curl {SERVER_URL}/health" in check.fix
    assert server.calls("GET", "/v1/models") == []


def test_a_failing_health_route_is_fail_with_a_fix_naming_the_logs(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/health", 500, {"detail": "model file not found"})

    check = probe(server, make_client)

    assert check.status == "fail"
    assert check.detail.startswith(f"{SERVER_URL}/health answered HTTP 500: ")
    assert "model file not found" in check.detail
    assert "`make logs`" in check.fix
    assert "MODEL_FILE" in check.fix


def test_an_unreachable_server_is_fail_with_a_fix_naming_llm_server_url(
    fake_server: FakeServer, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = fake_server.fail("GET", "/health", httpx.ConnectError)

    check = probe(server, make_client)

    assert check.status == "fail"
    assert check.detail == f"{SERVER_URL}: not reachable (ConnectError)"
    assert "LLM_SERVER_URL" in check.fix
    assert "`make up`" in check.fix
    assert len(server.requests) == 1
    assert sleeps == []


def test_a_ready_vllm_server_is_ok_with_its_load(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", max_model_len=8192)
    server.reply("GET", "/health", 200, text="")
    server.reply("GET", "/metrics", 200, text=VLLM_METRICS)

    check = probe(server, make_client)

    assert check.ok
    assert check.detail == (
        f"{SERVER_URL}: ready; backend vllm, model {MODEL}, context 8192 tokens; "
        "3 running, 1 waiting, KV cache 42% used"
    )
    assert check.facts["backend"] == "vllm"
    assert server.calls("GET", "/props") == []


def test_a_vllm_server_without_metrics_is_ok_without_load(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", max_model_len=2048)
    server.reply("GET", "/health", 200, text="")

    check = probe(server, make_client)

    assert check.ok
    assert check.detail.endswith("context 2048 tokens")


def test_a_refused_api_key_is_fail_with_a_fix_naming_llm_api_key(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/health", 200, {"status": "ok"})
    server.reply("GET", "/v1/models", 401, {"error": {"message": "Invalid API key"}})

    check = probe(server, make_client, llm_api_key="wrong-key")

    assert check.status == "fail"
    assert check.detail.startswith(f"{SERVER_URL}: /v1/models failed: ")
    assert check.fix == "set LLM_API_KEY in .env"
    assert server.calls("GET", "/v1/models")[0].headers["authorization"] == "Bearer wrong-key"


def test_a_model_the_server_does_not_serve_is_fail_with_a_fix_naming_llm_model(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm")
    server.reply("GET", "/health", 200, text="")

    check = probe(server, make_client, llm_model="gpt-4")

    assert check.status == "fail"
    assert "LLM_MODEL='gpt-4' is not served" in check.detail
    assert check.fix == "set LLM_MODEL in .env"


def test_an_unexplained_models_failure_points_at_the_logs(
    fake_server: FakeServer, make_client: ClientFactory
) -> None:
    server = fake_server.reply("GET", "/health", 200, {"status": "ok"})
    server.reply("GET", "/v1/models", 400, {"error": {"message": "bad request"}})

    check = probe(server, make_client)

    assert check.status == "fail"
    assert check.fix == "read the server's log (`make logs`)"


def test_an_injected_client_is_left_open(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp")
    server.reply("GET", "/health", 200, {"status": "ok"})
    client = make_client(server)

    check_llm_server(client.settings, client)

    assert not client.endpoints[0].http.is_closed


def free_port() -> int:
    """A loopback port that was free a moment ago, so nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _settings_for(port: int) -> WorkerSettings:
    return load_settings(
        WorkerSettings,
        _env_file=None,
        redis_host="127.0.0.1",
        redis_port=port,
        redis_db=0,
        redis_password="",
    )


def test_redis_where_nothing_listens_is_fail_with_a_fix_naming_host_and_port() -> None:
    port = free_port()
    check = check_redis(_settings_for(port))

    assert check.status == "fail"
    assert check.name == "Redis"
    assert check.detail == f"127.0.0.1:{port} db 0: not reachable (ConnectionError)"
    assert "REDIS_HOST/REDIS_PORT" in check.fix


def test_a_redis_probe_connects_once_and_does_not_retry() -> None:
    """A Redis that drops every connection is reported after one try, not redis-py's ten."""
    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.05)
        port = listener.getsockname()[1]

        def drop_connections() -> None:
            while not done.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                accepted.append(conn)
                conn.close()

        done = threading.Event()
        thread = threading.Thread(target=drop_connections)
        thread.start()
        try:
            check = check_redis(_settings_for(port))
        finally:
            done.set()
            thread.join()

    assert check.status == "fail"
    assert len(accepted) == 1


@pytest.mark.parametrize(("status", "ok"), [("ok", True), ("wait", False), ("fail", False)])
def test_only_an_ok_check_is_ok(status: str, ok: bool) -> None:
    assert Check("X", status, "detail").ok is ok  # type: ignore[arg-type]


def _served(backend: str, model: str) -> Check:
    return Check("LLM server", "ok", "ready", facts={"backend": backend, "model": model})


def test_a_served_model_other_than_model_path_is_a_warning_naming_the_key() -> None:
    settings = load_settings(_env_file=None, model_path="/models/second.gguf")

    warned = check_served_model(settings, _served("llamacpp", "SmolLM2-135M-Instruct.Q4_1"))

    assert warned is not None and warned.status == "warn" and warned.ok
    assert "serves SmolLM2-135M-Instruct.Q4_1, but .env asks for second" in warned.detail
    assert "MODEL_PATH=/models/second.gguf" in warned.detail
    assert "make down && make up" in warned.fix
    assert check_served_model(settings, _served("llamacpp", "second")) is None


def test_the_served_model_is_checked_against_model_file_or_vllms_name() -> None:
    default = load_settings(_env_file=None)
    assert check_served_model(default, _served("llamacpp", "SmolLM2-135M-Instruct.Q4_1")) is None
    other = check_served_model(default, _served("llamacpp", "qwen"))
    assert other is not None and "MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf" in other.detail
    vllm = check_served_model(default, _served("vllm", "/models/other"))
    assert vllm is not None and "MODEL_NAME=/models/SmolLM2-135M-Instruct" in vllm.detail
    named = load_settings(_env_file=None, served_model_name="smollm2")
    assert check_served_model(named, _served("vllm", "smollm2")) is None
    # LLM_MODEL picks among served models itself; a failed check has nothing to compare.
    chosen = load_settings(_env_file=None, llm_model="qwen")
    assert check_served_model(chosen, _served("llamacpp", "qwen")) is None
    assert check_served_model(default, Check("LLM server", "fail", "down")) is None
