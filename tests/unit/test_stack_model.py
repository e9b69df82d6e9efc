"""`kcw up` with compose checks the model the llama.cpp container will serve before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import StackSettings, load_settings
from worker.errors import StackError
from worker.ops.stack import check_compose_model

LLAMACPP = ["docker-compose.yml", "docker-compose.llamacpp.yml"]


def _settings(**keys: str) -> StackSettings:
    return load_settings(StackSettings, _env_file=None, **keys)


def test_a_model_path_under_models_that_exists_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/gguf").mkdir(parents=True)
    (tmp_path / "models/gguf/second.gguf").write_bytes(b"GGUF")

    check_compose_model(_settings(model_path="/models/second.gguf"), LLAMACPP)


def test_a_missing_model_names_the_key_that_chose_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StackError, match=r"models/gguf/third.gguf does not exist \(MODEL_PATH="):
        check_compose_model(_settings(model_path="/models/third.gguf"), LLAMACPP)
    with pytest.raises(StackError, match=r"\(MODEL_FILE=x.gguf\).*make model"):
        check_compose_model(_settings(model_file="x.gguf"), LLAMACPP)


def test_a_host_path_is_refused_for_the_container_with_the_way_out(tmp_path: Path) -> None:
    model = tmp_path / "big.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(StackError, match=r"host path.*models/gguf/.*KCW_STACK=local"):
        check_compose_model(_settings(model_path=str(model)), LLAMACPP)


def test_vllm_layerings_are_not_checked_for_a_gguf(tmp_path: Path) -> None:
    vllm = ["docker-compose.yml", "docker-compose.vllm.yml"]
    check_compose_model(_settings(model_path="/somewhere/else.gguf"), vllm)
