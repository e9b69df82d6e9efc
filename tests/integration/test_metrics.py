"""Metrics and `kcw top` against real parts: a worker, llama-server, `kcw serve` and Prometheus.

One worker of its own (its counters start at zero) runs known jobs; the test then reads
its `/metrics`, `kcw top --once --json`, and a real Prometheus that scrapes the worker,
llama-server and `kcw serve`, and checks each figure against what it knows happened.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    LLMServer,
    RedisServer,
    Worker,
    api_client,
    client_app,
    run_kcw,
    start_api,
    start_redis,
    start_worker,
    stop,
    submitter,
    worker_env,
)
from tests.support.prometheus import running_prometheus
from worker.batches.records import BatchRecord, Internal, RequestCounts
from worker.batches.store import BatchStore
from worker.broker import close_app
from worker.llm.limits import window_for_slots
from worker.ops.processes import free_port, spawn, wait_until
from worker.ops.workers import celery_bin, worker_argv

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker/monitoring/grafana/dashboards/kc-worker.json"
JOBS = 5


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a `/metrics` page, keyed by name and sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    return sum(
        v for (n, lab), v in samples.items() if n == name and set(labels.items()) <= set(lab)
    )


class Metered:
    """A Redis and a worker with metrics of this module's own, and what the test sent it."""

    def __init__(self, redis: RedisServer, worker: Worker, port: int, env: dict[str, str]) -> None:
        self.redis, self.worker, self.port, self.env = redis, worker, port, env
        self.results: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer) -> Iterator[Metered]:
    tmp = tmp_path_factory.mktemp("metered")
    redis = start_redis(tmp, secrets.token_urlsafe(12))
    port = free_port()
    env = worker_env(redis, llm_server.url, WORKER_METRICS_PORT=str(port))
    worker = start_worker(tmp, env, "metered")
    app = client_app(redis)
    try:
        submit = submitter(app)
        metered = Metered(redis, worker, port, env)
        for i in range(JOBS):
            payload = {
                "messages": [{"role": "user", "content": f"Say a number: {i}"}],
                "max_tokens": 8,
            }
            metered.results.append(submit("chat", payload).get(timeout=120))
        bad = submit("chat", {"messages": "not a list"})
        assert bad.state == "FAILURE"
        yield metered
    finally:
        close_app(app)
        stop(worker.proc)
        stop(redis.proc)


def test_the_counters_match_the_jobs_that_ran(metered: Metered) -> None:
    samples = scrape(metered.port)
    assert value(samples, "kcw_jobs_succeeded_total", kind="chat") == JOBS
    assert value(samples, "kcw_jobs_failed_total", kind="chat", error="InvalidJobInput") == 1
    prompt = sum(r["usage"]["prompt_tokens"] for r in metered.results)
    generated = sum(r["usage"]["completion_tokens"] for r in metered.results)
    assert value(samples, "kcw_prompt_tokens_total", kind="chat") == prompt
    assert value(samples, "kcw_generation_tokens_total", kind="chat") == generated
    # Each job made one request; batch lines run by the same worker made one each.
    lines = value(samples, "kcw_batch_lines_total", outcome="succeeded")
    assert value(samples, "kcw_llm_requests_total", status="2xx") == JOBS + lines
    # Every job, the failed one too, waited in the queue and ran.
    assert value(samples, "kcw_job_queue_wait_seconds_count", kind="chat") == JOBS + 1
    assert value(samples, "kcw_job_duration_seconds_count", kind="chat") == JOBS + 1
    llm = sum(r["usage"]["llm_seconds"] for r in metered.results)
    assert value(samples, "kcw_job_llm_seconds_sum", kind="chat") == pytest.approx(llm, abs=0.01)
    assert value(samples, "kcw_jobs_retried_total", kind="chat") == 0  # declared, at zero


def test_kcw_top_once_json_reports_the_true_state(
    metered: Metered, llm_server: LLMServer, tmp_path: Path
) -> None:
    # The worker's view: its pool (WORKER_CONCURRENCY=4 in the tests) and the server's window.
    env = metered.env
    done = run_kcw(["top", "--once", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    [worker] = snap["workers"]
    assert worker["pool"] == 4 and worker["running"] == 0
    # Every job run ends once: the chat jobs, the bad one, and any batch line of another test.
    ran = value(scrape(metered.port), "kcw_job_duration_seconds_count")
    assert worker["finished"] == ran >= JOBS + 1
    slots = httpx.get(f"{llm_server.url}/props", timeout=10).json()["total_slots"]
    [server] = snap["servers"]
    assert server["url"] == llm_server.url and server["healthy"] is True
    assert server["window"] == window_for_slots(slots) and server["in_flight"] == 0

    # A db no worker consumes: jobs wait there, and a batch is half done.
    db = 1
    app = client_app(metered.redis, db)
    rds = metered.redis.client(db=db)
    rds.flushdb()
    try:
        for i in range(7):
            app.send_task("kcw.chat", args=[{"messages": [{"role": "user", "content": str(i)}]}])
        now = int(time.time())
        BatchStore(rds).create(
            BatchRecord(
                id="batch_top_probe",
                endpoint="/v1/chat/completions",
                input_file_id="file-none",
                completion_window="24h",
                status="in_progress",
                created_at=now - 30,
                in_progress_at=now - 20,
                request_counts=RequestCounts(total=100, completed=35, failed=5),
                kcw=Internal(output_id="file-o", error_id="file-e"),
            )
        )
        idle = run_kcw(["top", "--once", "--json"], {**env, "REDIS_DB": str(db)}, tmp_path)
        assert idle.returncode == 0, idle.stderr
        snap = json.loads(idle.stdout)
        assert snap["queue"]["waiting"] == 7 and snap["workers"] == []
        [batch] = snap["batches"]
        assert batch["id"] == "batch_top_probe" and batch["status"] == "in_progress"
        assert (batch["completed"], batch["failed"], batch["total"]) == (35, 5, 100)
        assert batch["done_share"] == 0.4
        # 40 lines in about 20 s: 2 lines/s, so the 60 left take about 30 s.
        assert batch["lines_per_s"] == pytest.approx(2.0, rel=0.15)
        assert batch["eta_s"] == pytest.approx(30, rel=0.15)
    finally:
        rds.flushdb()
        rds.close()
        close_app(app)


def promql_expressions() -> list[str]:
    """Every PromQL expression in the Grafana dashboard and in the README's promql blocks."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    for block in re.findall(r"```promql\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        exprs += [
            line.strip()
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
    return exprs


def test_a_real_prometheus_scrapes_worker_llm_server_and_serve_and_every_query_has_data(
    metered: Metered,
    llm_server: LLMServer,
    tmp_path: Path,
) -> None:
    api = start_api(tmp_path, metered.env, "metrics-api")
    try:
        # One small batch, so the batch series have data.
        sdk = api_client(api)
        lines = "".join(
            json.dumps(
                {
                    "custom_id": f"m{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 4},
                }
            )
            + "\n"
            for i in range(3)
        )
        uploaded = sdk.files.create(file=("m.jsonl", lines.encode()), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        llm = llm_server.url.removeprefix("http://")
        targets = {
            "kcw-workers": f"127.0.0.1:{metered.port}",
            "kcw-serve": f"127.0.0.1:{api.port}",
            "llm-server": llm,
        }
        with running_prometheus(tmp_path / "prometheus", targets) as prometheus:
            prometheus.wait_up(list(targets))
            deadline = time.monotonic() + 180
            while sdk.batches.retrieve(batch.id).status != "completed":
                assert time.monotonic() < deadline, "the batch did not complete"
                time.sleep(0.5)
            time.sleep(3)  # a few scrapes after the last line
            empty = []
            for expr in promql_expressions():
                if not prometheus.query(expr)["result"]:
                    empty.append(expr)
            assert empty == [], f"queries without data: {empty}"
            succeeded = prometheus.query('sum(kcw_jobs_succeeded_total{kind="chat"})')
            assert float(succeeded["result"][0]["value"][1]) == JOBS
    finally:
        stop(api.proc)


def test_json_logs_carry_the_job_id_and_kind(metered: Metered, llm_server: LLMServer) -> None:
    db = 2
    env = worker_env(metered.redis, llm_server.url, REDIS_DB=str(db), LOG_FORMAT="json")
    worker = start_worker(metered.worker.log.parent, env, "jsonlogs")
    app = client_app(metered.redis, db)
    try:
        bad = submitter(app)("chat", {"messages": []})
        assert bad.state == "FAILURE"
    finally:
        close_app(app)
        stop(worker.proc)
    entries = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert entries, worker.output()[-2000:]
    mine = [e for e in entries if e.get("job_id") == bad.id]
    assert mine and all(e["kind"] == "chat" for e in mine), entries[-5:]
    assert any("InvalidJobInput" in e["message"] for e in mine)


def test_flower_shows_our_workers_and_their_jobs(
    metered: Metered, llm_server: LLMServer, tmp_path: Path
) -> None:
    db = 3
    env = worker_env(metered.redis, llm_server.url, REDIS_DB=str(db))
    worker = spawn(
        worker_argv(hostname="flowered@%h", quiet=True, extra=("-E",)),
        tmp_path / "worker.log",
        env,
        cwd=tmp_path,
    )
    port = free_port()
    # What `make flower` runs; the API needs this variable when Flower has no login.
    flower = spawn(
        [celery_bin(), "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"],
        tmp_path / "flower.log",
        {**env, "FLOWER_UNAUTHENTICATED_API": "true"},
        cwd=tmp_path,
    )
    app = client_app(metered.redis, db)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: any("flowered@" in name for name in _flower(base, "/api/workers?refresh=1")),
            90,
            "Flower to list the worker",
        )
        job = submitter(app)(
            "chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        )
        assert job.state == "SUCCESS"

        def shown() -> bool:
            task = _flower(base, "/api/tasks").get(job.id)
            return bool(task) and task["state"] == "SUCCESS" and task["name"] == "kcw.chat"

        wait_until(shown, 60, "Flower to show the job")
    finally:
        close_app(app)
        stop(flower)
        stop(worker)


def _flower(base: str, path: str) -> dict[str, Any]:
    try:
        reply = httpx.get(base + path, timeout=10)
    except httpx.HTTPError:
        return {}
    return reply.json() if reply.status_code == 200 else {}  # type: ignore[no-any-return]
