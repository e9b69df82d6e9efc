"""Our own metrics logic: status classes, token counting, the recent rate, top's batch math."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import time

import httpx
import pytest
from prometheus_client.registry import REGISTRY

from worker.batches.records import BatchRecord, Internal, RequestCounts
from worker.cli.top import _interval, render
from worker.errors import (
    ContextLengthExceeded,
    LLMRateLimited,
    LLMResponseInvalid,
    LLMServerDown,
    LLMUnavailable,
)
from worker.llm.observed import count_success, status_class
from worker.llm.passthrough import RawReply
from worker.llm.types import Completion, Usage
from worker.metrics.endpoint import serve_metrics
from worker.metrics.meter import metered_job
from worker.metrics.recent import RecentJobs
from worker.metrics.series import declare, record_metrics
from worker.ops.top import batch_progress
from worker.runtime.logs import JsonFormatter


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (LLMServerDown("x"), "unreachable"),
        (LLMRateLimited("x"), "4xx"),
        (ContextLengthExceeded("x"), "4xx"),
        (LLMUnavailable("x"), "5xx"),
        (LLMResponseInvalid("x"), "2xx"),
        (RuntimeError("x"), "error"),
    ],
)
def test_each_error_has_its_status_class(error: Exception, status: str) -> None:
    assert status_class(error) == status


def test_tokens_are_counted_under_the_running_jobs_kind_and_model() -> None:
    url = "http://unit-test:1"
    before = sample("kcw_prompt_tokens_total", kind="unit", model="m1")
    with metered_job("unit") as meter:
        count_success(url, Completion("hi", "stop", "m1", Usage(11, 3, 0.5)))
        count_success(
            url, RawReply(200, {"model": "m1", "usage": {"prompt_tokens": 4}}, None, 0.25)
        )
        count_success(url, ([[0.1]], Usage(prompt_tokens=2), "m1"))
    assert sample("kcw_prompt_tokens_total", kind="unit", model="m1") - before == 17
    assert sample("kcw_generation_tokens_total", kind="unit", model="m1") >= 3
    assert meter.llm_seconds == pytest.approx(0.75)
    assert sample("kcw_llm_requests_total", server=url, status="2xx") >= 3


def test_a_raw_reply_with_nonsense_usage_counts_no_tokens() -> None:
    before = sample("kcw_prompt_tokens_total", kind="odd", model="m2")
    with metered_job("odd"):
        count_success(
            "http://u:2", RawReply(200, {"model": "m2", "usage": {"prompt_tokens": -5}}, None, 0)
        )
        count_success("http://u:2", RawReply(200, {"model": "m2", "usage": "lots"}, None, 0))
    assert sample("kcw_prompt_tokens_total", kind="odd", model="m2") == before


def test_the_recent_rate_counts_only_the_last_window() -> None:
    now = [100.0]
    jobs = RecentJobs(clock=lambda: now[0])
    for _ in range(20):
        jobs.started()
        jobs.ended()
    now[0] += 5
    for _ in range(10):
        jobs.started()
        jobs.ended()
    assert jobs.rate(10) == 3.0 and jobs.finished == 30 and jobs.running == 0
    now[0] += 6  # the first 20 are now older than 10 s
    assert jobs.rate(10) == 1.0


def test_declared_series_exist_at_zero() -> None:
    declare(["declared_kind"], ["LLMUnavailable"])
    assert REGISTRY.get_sample_value("kcw_jobs_succeeded_total", {"kind": "declared_kind"}) == 0
    retried = {"kind": "declared_kind", "error": "LLMUnavailable"}
    assert REGISTRY.get_sample_value("kcw_jobs_retried_total", retried) == 0


def record(total: int, completed: int, failed: int, started: int | None) -> BatchRecord:
    return BatchRecord(
        id="batch_unit",
        endpoint="/v1/chat/completions",
        input_file_id="file-x",
        completion_window="24h",
        status="in_progress",
        created_at=1000,
        in_progress_at=started,
        request_counts=RequestCounts(total=total, completed=completed, failed=failed),
        kcw=Internal(output_id="file-o", error_id="file-e"),
    )


def test_batch_progress_gives_share_rate_and_eta() -> None:
    row = batch_progress(record(100, 30, 10, started=1010), now=1030)
    assert (row["done_share"], row["lines_per_s"], row["eta_s"]) == (0.4, 2.0, 30.0)


def test_batch_progress_has_no_eta_before_the_first_line() -> None:
    row = batch_progress(record(100, 0, 0, started=None), now=1030)
    assert row["eta_s"] is None and row["lines_per_s"] == 0.0 and row["done_share"] == 0.0


def test_top_renders_an_empty_system() -> None:
    snap = {
        "queue": {"name": "kcw", "waiting": 0, "unacked": 0},
        "workers": [],
        "servers": [],
        "batches": [],
    }
    assert len(render(snap).renderables) == 4


@pytest.mark.parametrize("text", ["0", "-1", "soon", "99999"])
def test_top_refuses_a_bad_interval_and_says_what_it_takes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--interval"):
        _interval(text)


def test_json_logs_are_one_object_per_line() -> None:
    record_ = logging.LogRecord("kcw.test", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    entry = json.loads(JsonFormatter().format(record_))
    assert entry["message"] == "hello you" and entry["level"] == "INFO"
    assert entry["logger"] == "kcw.test" and "job_id" not in entry


def test_metrics_are_off_at_port_zero_and_take_the_next_free_port() -> None:
    assert serve_metrics("127.0.0.1", 0) is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = serve_metrics("127.0.0.1", port)
    assert taken is not None and taken > port
    assert "kcw_jobs_succeeded_total" in httpx.get(f"http://127.0.0.1:{taken}/metrics").text


def test_a_job_is_counted_by_outcome_and_timed() -> None:
    before = sample("kcw_job_duration_seconds_count", kind="meter")
    with metered_job("meter", sent_at=time.time() - 2) as meter:
        meter.failed(ValueError("x"))
    with metered_job("meter") as meter:
        meter.succeeded()
    assert sample("kcw_jobs_failed_total", kind="meter", error="ValueError") == 1
    assert sample("kcw_jobs_succeeded_total", kind="meter") == 1
    assert sample("kcw_job_duration_seconds_count", kind="meter") - before == 2
    assert sample("kcw_job_queue_wait_seconds_sum", kind="meter") >= 2
    assert sample("kcw_job_queue_wait_seconds_count", kind="meter") == 1


def test_with_metrics_off_nothing_is_recorded_but_the_meter_still_runs() -> None:
    record_metrics(False)
    try:
        with metered_job("switched") as meter:
            count_success("http://off:1", Completion("x", "stop", "m3", Usage(5, 5, 0.5)))
            meter.succeeded()
    finally:
        record_metrics(True)
    assert meter.llm_seconds == 0.5
    assert sample("kcw_jobs_succeeded_total", kind="switched") == 0
    assert sample("kcw_prompt_tokens_total", kind="switched", model="m3") == 0
    assert sample("kcw_llm_requests_total", server="http://off:1", status="2xx") == 0
