"""Settings: defaults, `.env` and environment, and errors that name the key to fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu.utils.url import url_to_parts

from worker.config import (
    PLACEHOLDER_SECRETS,
    SettingsError,
    StackSettings,
    get_settings,
    load_settings,
)


def test_defaults_describe_a_local_stack() -> None:
    settings = load_settings(_env_file=None)

    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.llm_server_url == "http://localhost:8000"
    assert settings.llm_timeout == 120.0
    assert settings.llm_backend == "auto"
    assert settings.llm_model == ""
    assert settings.llm_context_length == 0
    assert settings.llm_api_key.get_secret_value() == ""
    assert settings.worker_pool == "threads"
    assert settings.worker_concurrency == 0  # sized to the servers at start-up
    assert settings.llm_server_urls == ("http://localhost:8000",)
    assert settings.llm_max_inflight == 64
    assert settings.task_time_limit == 1800
    assert settings.task_soft_time_limit == 1770
    assert settings.gguf_path == Path("models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf")


def test_environment_variables_are_read_case_insensitively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_TIMEOUT", "45.5")
    monkeypatch.setenv("llm_backend", "vllm")

    settings = load_settings(_env_file=None)

    assert settings.llm_timeout == 45.5
    assert settings.llm_backend == "vllm"


def test_env_file_is_read_and_unknown_compose_keys_are_ignored(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLM_MODEL=from-file\nCOMPOSE_PROJECT_NAME=kcw\nREDIS_PORT=6390\n")

    settings = load_settings(_env_file=env_file)

    assert settings.llm_model == "from-file"
    assert settings.redis_port == 6390


def test_environment_beats_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLM_MODEL=from-file\n")
    monkeypatch.setenv("LLM_MODEL", "from-env")

    assert load_settings(_env_file=env_file).llm_model == "from-env"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("LLM_TIMEOUT", "abc"),
        ("LLM_TIMEOUT", "0"),
        ("LLM_BACKEND", "foo"),
        ("REDIS_PORT", "70000"),
        ("REDIS_PORT", "0"),
        ("WORKER_POOL", "gevent"),
        ("LLM_RETRY_ATTEMPTS", "0"),
        ("LLM_SERVER_URL", "localhost:8000"),
    ],
)
def test_bad_value_names_the_key_and_the_value(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)

    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)

    assert f"{key}={value!r}" in str(caught.value)
    assert "fix them in .env or the environment" in str(caught.value)


def test_every_bad_key_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_TIMEOUT", "abc")
    monkeypatch.setenv("REDIS_PORT", "70000")

    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)

    message = str(caught.value)
    assert "LLM_TIMEOUT='abc'" in message
    assert "REDIS_PORT='70000'" in message


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="LLM_BACKEND"):
        load_settings(_env_file=None, llm_backend="foo")


@pytest.mark.parametrize("key", ["LLM_API_KEY", "REDIS_PASSWORD"])
@pytest.mark.parametrize("placeholder", sorted(PLACEHOLDER_SECRETS))
def test_placeholder_secret_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, key: str, placeholder: str
) -> None:
    monkeypatch.setenv(key, placeholder)

    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)

    message = str(caught.value)
    assert f"{key}=<secret>" in message
    assert "placeholder" in message
    assert placeholder not in message


def test_placeholder_is_recognised_in_any_case_and_with_spaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_API_KEY", "  ChangeMe ")

    with pytest.raises(SettingsError, match="LLM_API_KEY=<secret>"):
        load_settings(_env_file=None)


def test_real_secrets_never_appear_in_an_error_about_another_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_API_KEY", "sk-live-0123456789")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2-redis")
    monkeypatch.setenv("LLM_TIMEOUT", "abc")

    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)

    message = str(caught.value)
    assert "LLM_TIMEOUT='abc'" in message
    assert "sk-live-0123456789" not in message
    assert "hunter2-redis" not in message


def test_secrets_are_hidden_in_repr() -> None:
    settings = load_settings(_env_file=None, llm_api_key="sk-live-0123", redis_password="hunter2")

    assert "sk-live-0123" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert settings.llm_api_key.get_secret_value() == "sk-live-0123"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://llm:8000", "http://llm:8000"),
        ("http://llm:8000/", "http://llm:8000"),
        ("http://llm:8000/v1", "http://llm:8000"),
        ("http://llm:8000/v1/", "http://llm:8000"),
        ("  https://llm.example/v1  ", "https://llm.example"),
        ("http://llm:8000/api", "http://llm:8000/api"),
    ],
)
def test_server_url_loses_trailing_v1_and_slash(given: str, expected: str) -> None:
    assert load_settings(_env_file=None, llm_server_url=given).llm_server_url == expected


def test_server_url_without_scheme_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"LLM_SERVER_URL='llm:8000': .*http://"):
        load_settings(_env_file=None, llm_server_url="llm:8000")


def test_redis_url_quotes_a_password_with_special_characters() -> None:
    password = "p@ss:w/rd#%?&="
    settings = load_settings(
        _env_file=None, redis_password=password, redis_host="redis", redis_port=6390, redis_db=2
    )

    assert settings.redis_url == "redis://:p%40ss%3Aw%2Frd%23%25%3F%26%3D@redis:6390/2"
    # kombu and redis-py parse the URL Celery is given; both must get the password back.
    parts = url_to_parts(settings.redis_url)
    assert (parts.password, parts.hostname, parts.port, parts.path) == (
        password,
        "redis",
        6390,
        "2",
    )
    pool = redis.ConnectionPool.from_url(settings.redis_url)
    assert pool.connection_kwargs["password"] == password
    assert pool.connection_kwargs["db"] == 2


def test_redis_url_has_no_auth_part_without_a_password() -> None:
    assert "@" not in load_settings(_env_file=None).redis_url


@pytest.mark.parametrize(("time_limit", "backoff_max"), [(1800, 300), (130, 1), (10_000, 3600)])
def test_visibility_timeout_outlasts_the_longest_task_and_retry_countdown(
    time_limit: int, backoff_max: int
) -> None:
    settings = load_settings(
        _env_file=None, task_time_limit=time_limit, task_retry_backoff_max=backoff_max
    )

    assert settings.visibility_timeout > time_limit + backoff_max


@pytest.mark.parametrize("time_limit", [10, 1800, 100_000])
def test_soft_time_limit_fires_before_the_hard_one(time_limit: int) -> None:
    settings = load_settings(_env_file=None, task_time_limit=time_limit, llm_timeout=5)

    assert 0 < settings.task_soft_time_limit < time_limit


@pytest.mark.parametrize("time_limit", [60, 120])
def test_task_time_limit_not_above_llm_timeout_is_refused(time_limit: int) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, task_time_limit=time_limit, llm_timeout=120)

    message = str(caught.value)
    assert f"TASK_TIME_LIMIT ({time_limit})" in message
    assert "LLM_TIMEOUT (120)" in message


def test_time_budget_error_does_not_echo_secrets() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            _env_file=None, task_time_limit=60, llm_timeout=120, llm_api_key="sk-live-0123"
        )

    assert "sk-live-0123" not in str(caught.value)


@pytest.fixture
def fresh_get_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run get_settings from a folder without `.env`, and forget its cache afterwards."""
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("fresh_get_settings")
def test_get_settings_reads_once_and_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MODEL", "first")
    first = get_settings()
    monkeypatch.setenv("LLM_MODEL", "second")

    assert get_settings() is first
    assert first.llm_model == "first"


@pytest.mark.usefixtures("fresh_get_settings")
def test_get_settings_raises_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_TIMEOUT", "abc")

    with pytest.raises(SettingsError, match="LLM_TIMEOUT='abc'"):
        get_settings()


def test_model_path_wins_over_model_file_and_maps_models_to_the_gguf_folder() -> None:
    settings = load_settings(
        _env_file=None, model_path="/models/second.gguf", model_file="other.gguf"
    )
    assert settings.gguf_path == Path("models/gguf/second.gguf")
    assert settings.model_setting == "MODEL_PATH=/models/second.gguf"
    elsewhere = load_settings(_env_file=None, model_path="/srv/llm/big.gguf")
    assert elsewhere.gguf_path == Path("/srv/llm/big.gguf")
    assert load_settings(_env_file=None).model_setting.startswith("MODEL_FILE=")


@pytest.mark.parametrize("value", ["auto", "0", "512mb", "2GB", "1073741824", "100k"])
def test_redis_maxmemory_takes_what_redis_reads(value: str) -> None:
    settings = load_settings(StackSettings, _env_file=None, redis_maxmemory=value)
    assert settings.redis_maxmemory == value.lower()


@pytest.mark.parametrize("value", ["lots", "2 gb", "-1", "1.5gb"])
def test_a_redis_maxmemory_redis_cannot_read_names_the_key(value: str) -> None:
    with pytest.raises(SettingsError, match=r"REDIS_MAXMEMORY.*auto, 0, or a size"):
        load_settings(_env_file=None, redis_maxmemory=value)


def test_a_memory_reservation_above_its_limit_is_refused_naming_both_keys() -> None:
    with pytest.raises(
        SettingsError,
        match=r"REDIS_MEMORY_RESERVATION \(128m\) is above REDIS_MEMORY_LIMIT \(32m\)",
    ):
        load_settings(_env_file=None, redis_memory_limit="32m")
    with pytest.raises(SettingsError, match=r"LLM_MEMORY_LIMIT.*a memory size Docker reads"):
        load_settings(_env_file=None, llm_memory_limit="eight gigs")
    fine = load_settings(_env_file=None, redis_memory_limit="32m", redis_memory_reservation="16m")
    assert fine.redis_memory_limit == "32m"


def test_a_redis_cap_at_or_above_its_container_limit_is_refused() -> None:
    with pytest.raises(
        SettingsError, match=r"REDIS_MAXMEMORY \(1gb\) is not below REDIS_MEMORY_LIMIT \(1g\)"
    ):
        load_settings(_env_file=None, redis_maxmemory="1gb")
    assert load_settings(_env_file=None, redis_maxmemory="768mb").redis_maxmemory == "768mb"
    assert load_settings(_env_file=None, redis_maxmemory="1000000000").redis_maxmemory
    assert load_settings(_env_file=None, redis_maxmemory="0").redis_maxmemory == "0"
