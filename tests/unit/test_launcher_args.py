"""The llama.cpp launcher's pure logic: engine choice, llama-server's flags, finding the binary."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_launcher() -> ModuleType:
    # docker/ is not a package (and `docker` would clash with the Docker SDK's name).
    spec = importlib.util.spec_from_file_location(
        "kcw_launcher", ROOT / "docker/llamacpp/launcher.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


launcher = _load_launcher()
MODEL = Path("/models/SmolLM2-135M-Instruct.Q4_1.gguf")
BINARY = Path("/opt/llama/llama-server")


def config(**env: str) -> Any:
    return launcher.LauncherConfig.from_env({"MODEL_PATH": str(MODEL), **env})


def argv(**env: str) -> list[str]:
    return list(launcher.llama_server_argv(config(**env), BINARY, MODEL))


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_default_engine_is_llama_server_with_eight_slots() -> None:
    cfg = launcher.LauncherConfig.from_env({})
    assert (cfg.engine, cfg.n_parallel, cfg.n_ctx) == ("server", 8, 4096)


@pytest.mark.parametrize("value", ["python", "PYTHON", " python "])
def test_llamacpp_engine_python_picks_llama_cpp_python(value: str) -> None:
    assert config(LLAMACPP_ENGINE=value).engine == "python"


def test_an_unknown_engine_is_an_error_that_names_the_variable() -> None:
    with pytest.raises(launcher.LauncherConfigError, match="LLAMACPP_ENGINE='vllm'"):
        config(LLAMACPP_ENGINE="vllm")


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_n_parallel_must_be_a_positive_integer(value: str) -> None:
    with pytest.raises(launcher.LauncherConfigError, match="N_PARALLEL"):
        config(N_PARALLEL=value)


def test_config_file_is_refused_for_llama_server() -> None:
    with pytest.raises(launcher.LauncherConfigError, match=r"CONFIG_FILE=.*LLAMACPP_ENGINE=python"):
        config(CONFIG_FILE="/etc/models.json")


def test_the_full_default_command_line() -> None:
    assert argv() == [
        str(BINARY),
        "--model",
        str(MODEL),
        "--alias",
        "SmolLM2-135M-Instruct.Q4_1",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--ctx-size",
        "32768",
        "--parallel",
        "8",
        "--no-kv-unified",
        "--cont-batching",
        "--jinja",
        "--n-gpu-layers",
        "0",
        "--metrics",
        "--no-webui",
    ]


def test_every_slot_gets_n_ctx_tokens() -> None:
    args = argv(N_CTX="2048", N_PARALLEL="3")
    assert (flag(args, "--ctx-size"), flag(args, "--parallel")) == ("6144", "3")
    assert "--no-kv-unified" in args  # one KV stream per slot, so each holds N_CTX


def test_settings_map_to_llama_server_flags() -> None:
    args = argv(
        MODEL_ALIAS="smollm",
        HOST="127.0.0.1",
        PORT="8123",
        N_GPU_LAYERS="12",
        N_THREADS="2",
        EMBEDDING="true",
    )
    assert flag(args, "--alias") == "smollm"
    assert (flag(args, "--host"), flag(args, "--port")) == ("127.0.0.1", "8123")
    assert flag(args, "--n-gpu-layers") == "12"
    assert flag(args, "--threads") == "2"
    assert "--embeddings" in args


def test_negative_gpu_layers_offload_every_layer() -> None:
    assert flag(argv(N_GPU_LAYERS="-1"), "--n-gpu-layers") == "all"


def test_threads_and_embeddings_are_left_out_unless_asked_for() -> None:
    args = argv(EMBEDDING="false", N_THREADS="0")
    assert "--threads" not in args
    assert "--embeddings" not in args


def test_the_api_key_goes_in_the_environment_not_on_the_command_line() -> None:
    cfg = config(LLM_API_KEY="s3cret")
    assert "s3cret" not in " ".join(launcher.llama_server_argv(cfg, BINARY, MODEL))
    env = launcher.llama_server_env(cfg, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "LLAMA_API_KEY": "s3cret"}


def test_no_api_key_drops_a_stray_llama_api_key() -> None:
    env = launcher.llama_server_env(config(), {"LLAMA_API_KEY": "old", "HOME": "/h"})
    assert env == {"HOME": "/h"}


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_llama_server_bin_wins(tmp_path: Path) -> None:
    explicit = _executable(tmp_path / "mine/llama-server")
    _executable(tmp_path / "path/llama-server")
    environ = {"LLAMA_SERVER_BIN": str(explicit), "PATH": str(tmp_path / "path")}
    assert launcher.find_llama_server(environ) == explicit


def test_a_bad_llama_server_bin_is_an_error_that_names_it(tmp_path: Path) -> None:
    not_executable = tmp_path / "llama-server"
    not_executable.write_text("")
    with pytest.raises(launcher.LauncherConfigError, match=r"LLAMA_SERVER_BIN=.*make llama-server"):
        launcher.find_llama_server({"LLAMA_SERVER_BIN": str(not_executable), "PATH": ""})


def test_path_comes_before_the_built_copy(tmp_path: Path) -> None:
    on_path = _executable(tmp_path / "path/llama-server")
    _executable(tmp_path / "built/bin/llama-server")
    environ = {"PATH": str(tmp_path / "path"), "KCW_LLAMA_SERVER_DIR": str(tmp_path / "built")}
    assert launcher.find_llama_server(environ) == on_path


def test_the_built_copy_is_found_in_the_cache(tmp_path: Path) -> None:
    version = launcher.LLAMA_CPP_PYTHON_VERSION
    built = _executable(tmp_path / f"kc-worker/llama-server-{version}/bin/llama-server")
    environ = {"PATH": str(tmp_path / "empty"), "XDG_CACHE_HOME": str(tmp_path)}
    assert launcher.find_llama_server(environ) == built


def test_a_missing_binary_says_how_to_get_one(tmp_path: Path) -> None:
    environ = {"PATH": str(tmp_path), "KCW_LLAMA_SERVER_DIR": str(tmp_path / "none")}
    with pytest.raises(launcher.LauncherConfigError) as caught:
        launcher.find_llama_server(environ)
    message = str(caught.value)
    assert "make llama-server" in message
    assert "LLAMA_SERVER_BIN" in message
    assert "LLAMACPP_ENGINE=python" in message


def test_the_pinned_version_is_the_same_everywhere() -> None:
    version = launcher.LLAMA_CPP_PYTHON_VERSION
    script = (ROOT / "scripts/llama-server-env").read_text()
    dockerfile = (ROOT / "Dockerfile.llamacpp").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf"^LLAMA_CPP_PYTHON_VERSION={re.escape(version)}$", script, re.M)
    assert re.search(rf"^ARG LLAMA_CPP_PYTHON_VERSION={re.escape(version)}$", dockerfile, re.M)
    assert f'"llama-cpp-python[server]=={version}"' in pyproject
    assert re.search(r"^SDIST_SHA256=[0-9a-f]{64}$", script, re.M)
    # The image builds llama-server with the same script, so the same pinned sdist.
    assert "COPY scripts/llama-server-env" in dockerfile


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="AMX is an x86 extension")
def test_native_x86_builds_leave_out_amx_and_portable_ones_need_not() -> None:
    script = str(ROOT / "scripts/llama-server-env")

    def cflags(**env: str) -> str:
        done = subprocess.run(
            [script, "cflags"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    native = cflags(GGML_NATIVE="ON")
    assert set(native.split()) == {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"}
    assert cflags(GGML_NATIVE="OFF") == ""  # a named CPU level has no AMX unless asked
    # The compiler agrees: with these flags, -march=native defines no AMX macro.
    done = subprocess.run(
        ["cc", *native.split(), "-march=native", "-dM", "-E", "-"],
        input="",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "__AMX" not in done.stdout
    # The Makefile hands them to pip's build of llama-cpp-python.
    assert "$(LLAMA_SERVER_ENV) cflags" in (ROOT / "Makefile").read_text()


def test_config_file_keeps_the_launchers_socket_and_no_interrupts(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "host": "10.0.0.1",
                "port": 9999,
                "interrupt_requests": True,
                "models": [{"model": "a.gguf", "model_alias": "a"}, {"model": "b.gguf"}],
            }
        )
    )
    cfg = config(LLAMACPP_ENGINE="python", CONFIG_FILE=str(path), HOST="127.0.0.1", PORT="8001")
    server, models = launcher.read_config_file(cfg)
    assert (server.host, server.port, server.interrupt_requests) == ("127.0.0.1", 8001, False)
    assert [m.model for m in models] == ["a.gguf", "b.gguf"]


def test_a_yaml_config_file_and_the_api_key(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "models.yaml"
    path.write_text("api_key: from-file\nmodels:\n  - model: a.gguf\n")
    keyed = config(LLAMACPP_ENGINE="python", CONFIG_FILE=str(path), LLM_API_KEY="from-env")
    assert launcher.read_config_file(keyed)[0].api_key == "from-env"
    unkeyed = config(LLAMACPP_ENGINE="python", CONFIG_FILE=str(path))
    assert launcher.read_config_file(unkeyed)[0].api_key == "from-file"


def test_a_config_file_without_models_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "empty.json"
    path.write_text("{}")
    with pytest.raises(launcher.LauncherConfigError, match="lists no models"):
        launcher.read_config_file(config(LLAMACPP_ENGINE="python", CONFIG_FILE=str(path)))


def _run_launcher(tmp_path: Path, **env: str) -> tuple[int, int, str, str]:
    """Run the launcher to its end: its pid, exit code, stdout and stderr."""
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "docker/llamacpp/launcher.py")],
        env={"PATH": os.defpath, "MODEL_PATH": str(model), "HOME": str(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=30)
    return proc.pid, proc.returncode, out, err


def test_the_launcher_becomes_llama_server(tmp_path: Path) -> None:
    # A stand-in binary that reports what it was started with: no model is loaded here.
    fake = tmp_path / "llama-server"
    fake.write_text('#!/bin/sh\necho "pid=$$ key=$LLAMA_API_KEY args=$*"\n')
    fake.chmod(0o755)
    pid, code, out, err = _run_launcher(
        tmp_path, LLAMA_SERVER_BIN=str(fake), LLM_API_KEY="k1", N_PARALLEL="2"
    )
    assert code == 0, err
    assert f"pid={pid} " in out  # exec, not a child: llama-server gets the signals
    assert "key=k1 args=--model" in out
    assert "--parallel 2" in out
    assert "starting llama-server: 2 slots of 4096 tokens" in err


def test_the_launcher_exits_with_the_error_when_nothing_can_start(tmp_path: Path) -> None:
    _, code, _, err = _run_launcher(tmp_path, KCW_LLAMA_SERVER_DIR=str(tmp_path / "none"))
    assert code == 2
    assert "make llama-server" in err
    _, code, _, err = _run_launcher(tmp_path, LLAMACPP_ENGINE="llamafile")
    assert code == 2
    assert "LLAMACPP_ENGINE='llamafile'" in err


def test_a_missing_model_stops_the_launcher_before_llama_server(tmp_path: Path) -> None:
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho started\n")
    fake.chmod(0o755)
    absent = str(tmp_path / "absent.gguf")
    _, code, out, err = _run_launcher(tmp_path, LLAMA_SERVER_BIN=str(fake), MODEL_PATH=absent)
    assert code == 1
    assert "started" not in out
    assert f"MODEL_PATH={absent}" in err


def test_n_ctx_zero_lets_every_slot_use_the_models_context() -> None:
    args = argv(N_CTX="0", N_PARALLEL="4")
    assert flag(args, "--ctx-size") == "0"
    assert "--kv-unified" in args
    assert "--no-kv-unified" not in args
