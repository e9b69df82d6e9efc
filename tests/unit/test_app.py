"""The Celery app: reliability settings, and no settings read at import time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import worker
from worker.broker import (
    MAX_REPR_FIELDS,
    QUEUE,
    RESULT_BACKEND,
    celery_config,
    make_app,
    send_options,
)
from worker.config import Settings, load_settings
from worker.runtime.results import ResultBackend

if TYPE_CHECKING:
    from tests.unit.conftest import SettingsFactory


def test_tasks_are_acked_late_and_requeued_when_a_worker_dies(
    make_settings: SettingsFactory,
) -> None:
    config = celery_config(make_settings())

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_connection_retry_on_startup"] is True


def test_only_json_is_accepted(make_settings: SettingsFactory) -> None:
    config = celery_config(make_settings())

    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"


def test_visibility_timeout_is_where_kombu_reads_it(make_settings: SettingsFactory) -> None:
    settings = make_settings(task_time_limit=900, task_retry_backoff_max=120)

    config = celery_config(settings)

    assert config["broker_transport_options"]["visibility_timeout"] == settings.visibility_timeout
    assert config["result_backend_transport_options"]["visibility_timeout"] == (
        settings.visibility_timeout
    )
    assert settings.visibility_timeout > 900 + 120


def test_a_set_visibility_timeout_wins_and_dead_workers_jobs_are_looked_for_often(
    make_settings: SettingsFactory,
) -> None:
    derived = celery_config(make_settings())["broker_transport_options"]
    assert derived["unacked_restore_interval"] == 10
    assert derived["unacked_restore_throttle"] == 1

    short = celery_config(make_settings(redis_visibility_timeout=20))["broker_transport_options"]
    assert short["visibility_timeout"] == 20
    assert short["unacked_restore_interval"] == 2


def test_results_written_while_redis_restarts_are_retried(make_settings: SettingsFactory) -> None:
    config = celery_config(make_settings())
    assert config["result_backend_always_retry"] is True
    assert 0 < config["result_backend_max_retries"] < float("inf")


def test_time_limits_come_from_settings(make_settings: SettingsFactory) -> None:
    config = celery_config(make_settings(task_time_limit=600, result_expires=3600))

    assert config["task_time_limit"] == 600
    assert config["task_soft_time_limit"] == 570
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    assert config["result_expires"] == 3600


def test_pool_concurrency_and_queue_come_from_settings(make_settings: SettingsFactory) -> None:
    config = celery_config(make_settings(worker_pool="prefork", worker_concurrency=2))

    assert config["worker_pool"] == "prefork"
    assert config["worker_concurrency"] == 2
    assert config["task_default_queue"] == QUEUE == "kcw"


def test_broker_and_backend_use_the_redis_url(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_host="redis", redis_password="s3cret/pw")

    config = celery_config(settings)

    assert config["broker_url"] == settings.redis_url == "redis://:s3cret%2Fpw@redis:6379/0"
    # Our backend class, then the same URL.
    assert config["result_backend"] == f"{RESULT_BACKEND}+{settings.redis_url}"
    app = make_app(settings)
    assert type(app.backend) is ResultBackend
    assert app.backend.url == settings.redis_url


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter from `cwd` (no `.env` there) with only `env` set."""
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    # Import the same `worker` package as this process, wherever it was imported from.
    source_root = str(Path(worker.__file__).resolve().parent.parent)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**clean, "PYTHONPATH": source_root, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_message_shows_its_fields_not_its_prompt_and_declares_nothing() -> None:
    payload = {"messages": [{"role": "user", "content": "a secret prompt"}], "max_tokens": 1}
    options = send_options(payload)
    assert options == {
        "argsrepr": "({'messages': …, 'max_tokens': …},)",
        "kwargsrepr": "{}",
        "declare": [],
    }
    many = send_options({f"k{i}": i for i in range(MAX_REPR_FIELDS + 3)})["argsrepr"]
    assert many.count(": …") == MAX_REPR_FIELDS and many.endswith(", …},)")
    assert send_options(["not", "a", "dict"])["argsrepr"] == "(list,)"


def test_a_result_wait_skips_celerys_zero_sleeps_and_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.backends import asynchronous

    from worker.runtime import results

    assert asynchronous.sleep is results._sleep  # where Celery's consumer looks it up
    slept: list[float] = []
    monkeypatch.setattr(results.time, "sleep", slept.append)
    results._sleep(0)
    results._sleep(0.25)
    assert slept == [0.25]


def test_importing_worker_reads_no_settings_until_celery_needs_them(tmp_path: Path) -> None:
    result = run_python(
        """
        import worker  # what `celery -A worker` does first
        from worker.config import SettingsError, get_settings
        print("imported", get_settings.cache_info().currsize)
        try:
            worker.app.conf.broker_url
        except SettingsError as exc:
            print("SettingsError:", exc)
        """,
        tmp_path,
        LLM_TIMEOUT="abc",
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "imported 0"
    assert lines[1].startswith("SettingsError: Invalid settings")
    assert "LLM_TIMEOUT='abc'" in result.stdout


def test_app_configuration_follows_the_environment(tmp_path: Path) -> None:
    result = run_python(
        """
        from worker.app import app
        print(app.conf.broker_url)
        print(app.conf.broker_transport_options["visibility_timeout"])
        print(app.conf.task_acks_late, app.conf.accept_content)
        """,
        tmp_path,
        REDIS_HOST="redis.test",
        REDIS_PASSWORD="p@ss",
        TASK_TIME_LIMIT="600",
        TASK_RETRY_BACKOFF_MAX="60",
    )

    assert result.returncode == 0, result.stderr
    broker_url, visibility, flags = result.stdout.splitlines()
    assert broker_url == "redis://:p%40ss@redis.test:6379/0"
    expected = load_settings(_env_file=None, task_time_limit=600, task_retry_backoff_max=60)
    assert int(visibility) == expected.visibility_timeout
    assert flags == "True ['json']"
