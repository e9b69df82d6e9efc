"""The openai SDK's batch flow through `kcw serve` to a worker on a real vLLM-cpu server.

`files.create` → `batches.create` → `batches.retrieve` until completed → `files.content`,
with each output line joined 1:1 to its input line by `custom_id`. Eight short lines,
since vLLM on two CPU cores is slow. The vLLM server is the tier's session one; the worker
and this `kcw serve` share a Redis db of their own (`spawn_worker`), so no other worker
takes these lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.batches import chat_line, jsonl, read_lines, wait_for
from tests.support.processes import SERVED_NAME, ApiServer, LLMServer, Worker, api_client, start_api

LINES = 8
MAX_TOKENS = 8
SUCCESS_METRIC = "vllm:request_success_total"


def requests_served(server: LLMServer) -> float:
    """vLLM's own count of the requests it finished (Prometheus `/metrics`)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(SUCCESS_METRIC)
    ]
    assert values, f"vLLM's /metrics has no {SUCCESS_METRIC}"
    return sum(values)


@pytest.fixture()
def vllm_api(
    tmp_path: Path,
    vllm_server: LLMServer,
    spawn_worker: Callable[..., tuple[Worker, Callable[..., Any]]],
) -> Iterator[ApiServer]:
    """`kcw serve` on the Redis db of a worker whose LLM server is vLLM."""
    worker, _ = spawn_worker(vllm_server.url)
    # No line is sent again while vLLM works through the window (it is slow, not lost).
    env = {**worker.env, "BATCH_WINDOW": "4", "BATCH_LINE_TIMEOUT": "900"}
    api = start_api(tmp_path, env, "serve-vllm")
    yield api
    api.stop()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_openai_sdk_runs_a_batch_on_vllm(vllm_api: ApiServer, vllm_server: LLMServer) -> None:
    client = api_client(vllm_api)
    served_before = requests_served(vllm_server)
    lines = [
        chat_line(f"v-{n}", f"Say the number {n}.", max_tokens=MAX_TOKENS) for n in range(LINES)
    ]

    uploaded = client.files.create(file=("vllm.jsonl", jsonl(lines)), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_for(client, created.id, timeout=800)
    out = read_lines(client, batch.output_file_id)

    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (LINES, LINES, 0)
    assert batch.error_file_id is None
    by_id = {item["custom_id"]: item for item in out}
    assert len(out) == LINES and sorted(by_id) == sorted(line["custom_id"] for line in lines)
    for line in lines:
        item = by_id[line["custom_id"]]
        body = item["response"]["body"]
        assert item["error"] is None and item["response"]["status_code"] == 200
        assert body["model"] == SERVED_NAME
        assert body["choices"][0]["message"]["content"]
        assert 0 < body["usage"]["completion_tokens"] <= MAX_TOKENS
    assert batch.usage is not None
    assert batch.usage.output_tokens == sum(
        item["response"]["body"]["usage"]["completion_tokens"] for item in out
    )
    assert len({item["response"]["request_id"] for item in out}) == LINES
    # vLLM itself finished the lines' requests (none other reach this server meanwhile).
    assert requests_served(vllm_server) - served_before >= LINES
