"""The Batch API end to end: the openai SDK against a real `kcw serve`, Redis, worker, llama.cpp.

`kcw serve` runs as a subprocess on a free port with its own data directory; the
session's worker runs the lines. Nothing on the path is mocked.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.batches import chat_line, jsonl, read_lines, run_batch, wait_for
from tests.support.processes import (
    ROOT,
    ApiServer,
    LLMServer,
    RedisServer,
    Worker,
    api_client,
    run_kcw,
    start_api,
    worker_env,
)


@pytest.fixture(scope="module")
def api(
    tmp_root: Path, redis_server: RedisServer, llm_server: LLMServer, worker: Worker
) -> Iterator[ApiServer]:
    env = worker_env(redis_server, llm_server.url, BATCH_WINDOW="6", BATCH_LINE_TIMEOUT="120")
    server = start_api(tmp_root, env, "kcw-serve")
    yield server
    server.stop()


@pytest.mark.integration
def test_the_openai_sdk_runs_a_batch_to_completed(api: ApiServer) -> None:
    client = api_client(api)
    lines = [chat_line(f"q-{n}", f"Say the number {n}.") for n in range(12)]

    uploaded = client.files.create(file=("questions.jsonl", jsonl(lines)), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"purpose": "test"},
    )
    batch = wait_for(client, created.id)

    assert created.status == "validating"
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (12, 12)
    assert batch.request_counts.failed == 0
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    assert batch.usage is not None and batch.usage.output_tokens > 0
    assert batch.metadata == {"purpose": "test"}
    assert batch.error_file_id is None
    out = read_lines(client, batch.output_file_id)
    assert sorted(item["custom_id"] for item in out) == sorted(f"q-{n}" for n in range(12))
    for item in out:
        assert item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["body"]["choices"][0]["message"]["content"] is not None
    assert sum(item["response"]["body"]["usage"]["completion_tokens"] for item in out) == (
        batch.usage.output_tokens
    )
    listed = [b.id for b in client.batches.list(limit=100)]
    assert batch.id in listed
    output_file = client.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output"
    assert uploaded.id in [f.id for f in client.files.list()]


BAD_FILES: dict[str, tuple[list[Any], int, str]] = {
    "not JSON": (
        [chat_line("a", "hi"), b'{"custom_id": "b", "method": "POST",'],
        2,
        "invalid_json",
    ),
    "missing custom_id": (
        [chat_line("a", "hi"), {k: v for k, v in chat_line("b", "hi").items() if k != "custom_id"}],
        2,
        "missing_custom_id",
    ),
    "duplicated custom_id": (
        [chat_line("a", "hi"), chat_line("a", "ho")],
        2,
        "duplicate_custom_id",
    ),
    "url other than the endpoint": (
        [chat_line("a", "hi"), {**chat_line("b", "hi"), "url": "/v1/embeddings"}],
        2,
        "mismatched_url",
    ),
    "method other than POST": (
        [{**chat_line("a", "hi"), "method": "GET"}, chat_line("b", "hi")],
        1,
        "invalid_method",
    ),
    "body not an object": (
        [chat_line("a", "hi"), {**chat_line("b", "x"), "body": [1]}],
        2,
        "invalid_body",
    ),
    "a line not an object": ([chat_line("a", "hi"), [1, 2]], 2, "invalid_request"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_fails_the_batch_with_the_line_and_nothing_runs(
    api: ApiServer, case: str
) -> None:
    lines, line, code = BAD_FILES[case]

    batch = run_batch(api_client(api), lines)

    assert batch.status == "failed"
    assert batch.in_progress_at is None and batch.failed_at
    assert batch.request_counts is not None and batch.request_counts.total == 0
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None and batch.errors.data
    (error,) = batch.errors.data
    assert (error.line, error.code) == (line, code)
    assert f"Line {line}" in (error.message or "")


@pytest.mark.integration
def test_a_line_only_the_server_rejects_fails_alone(api: ApiServer) -> None:
    client = api_client(api)
    lines = [
        chat_line("good-1", "Say hi."),
        chat_line("unknown-model", "Say hi.", model="no-such-model"),
        chat_line("too-long", "word " * 6000),
        chat_line("good-2", "Say ho."),
    ]

    batch = run_batch(client, lines)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    out = {item["custom_id"] for item in read_lines(client, batch.output_file_id)}
    errors = {item["custom_id"]: item for item in read_lines(client, batch.error_file_id)}
    assert out == {"good-1", "good-2"}
    assert errors["unknown-model"]["error"]["code"] == "ModelNotFound"
    assert "no-such-model" in errors["unknown-model"]["error"]["message"]
    assert errors["unknown-model"]["response"]["status_code"] == 404
    assert errors["too-long"]["error"]["code"] == "ContextLengthExceeded"
    assert errors["too-long"]["response"]["status_code"] == 400


@pytest.mark.integration
def test_our_job_kinds_are_line_endpoints(api: ApiServer) -> None:
    client = api_client(api)
    labels = ["positive", "negative"]
    lines = [
        {
            "custom_id": f"c{n}",
            "method": "POST",
            "url": "/kcw/v1/classify",
            "body": {"text": text, "labels": labels},
        }
        for n, text in enumerate(["I love it.", "Worst thing ever."])
    ]

    batch = run_batch(client, lines, endpoint="/kcw/v1/classify")

    assert batch.status == "completed"
    out = read_lines(client, batch.output_file_id)
    assert {item["custom_id"] for item in out} == {"c0", "c1"}
    assert all(item["response"]["body"]["label"] in labels for item in out)


@pytest.mark.integration
def test_cancel_keeps_the_finished_lines(api: ApiServer) -> None:
    client = api_client(api)
    lines = [
        chat_line(f"l{n}", f"Count from 1 to 50, number {n}.", max_tokens=48) for n in range(80)
    ]
    uploaded = client.files.create(file=("many.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    deadline = time.monotonic() + 600
    while (batch.request_counts is None or batch.request_counts.completed < 3) and (
        batch.status in ("validating", "in_progress")
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)

    cancelling = client.batches.cancel(batch.id)
    ended = wait_for(client, batch.id)

    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert ended.status == "cancelled" and ended.cancelled_at
    assert ended.request_counts is not None
    finished = ended.request_counts.completed + ended.request_counts.failed
    assert 3 <= finished < 80
    out = read_lines(client, ended.output_file_id)
    assert len(out) == ended.request_counts.completed
    assert len({item["custom_id"] for item in out}) == len(out)
    with pytest.raises(openai.ConflictError, match="cancelled and cannot be cancelled"):
        client.batches.cancel(ended.id)
    finished_batch = run_batch(client, [chat_line("x", "hi")])
    with pytest.raises(openai.ConflictError, match="completed and cannot be cancelled") as err:
        client.batches.cancel(finished_batch.id)
    assert err.value.status_code == 409


@pytest.mark.integration
def test_api_errors_have_openais_status_and_body(api: ApiServer) -> None:
    client = api_client(api)

    with pytest.raises(openai.AuthenticationError) as wrong_key:
        api_client(api, "wrong-key").batches.list()
    with pytest.raises(openai.NotFoundError) as unknown_batch:
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")
    with pytest.raises(openai.BadRequestError) as unknown_file:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError) as bad_endpoint:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/responses", completion_window="24h"
        )

    assert wrong_key.value.status_code == 401
    assert "KCW_API_KEY" in wrong_key.value.message
    assert unknown_batch.value.body == {
        "message": unknown_batch.value.body["message"],  # type: ignore[index]
        "type": "invalid_request_error",
        "param": "batch_id",
        "code": "not_found",
    }
    assert "batch_nope" in unknown_batch.value.message
    assert unknown_file.value.param == "input_file_id"
    assert "/v1/chat/completions" in bad_endpoint.value.message


@pytest.mark.integration
def test_kcw_batch_submits_waits_downloads_and_retries(api: ApiServer, tmp_path: Path) -> None:
    lines = [chat_line("ok-1", "Say hi."), chat_line("bad", "Say hi.", model="nope")]
    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl(lines))

    submitted = run_kcw(["batch", "submit", str(path), "--wait"], api.env, tmp_path, timeout=600)
    batch = json.loads(submitted.stdout)
    status = run_kcw(["batch", "status", batch["id"]], api.env, tmp_path)
    listed = run_kcw(["batch", "list"], api.env, tmp_path)
    downloaded = run_kcw(["batch", "download", batch["id"]], api.env, tmp_path)
    retried = run_kcw(["batch", "retry", batch["id"], "--wait"], api.env, tmp_path, timeout=600)
    finished = run_kcw(["batch", "cancel", batch["id"]], api.env, tmp_path)
    unknown = run_kcw(["batch", "status", "batch_nope"], api.env, tmp_path)

    assert submitted.returncode == 0, submitted.stderr
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert json.loads(status.stdout)["id"] == batch["id"]
    assert batch["id"] in listed.stdout
    output = (tmp_path / f"{batch['id']}_output.jsonl").read_text()
    errors = (tmp_path / f"{batch['id']}_errors.jsonl").read_text()
    assert downloaded.returncode == 0 and '"ok-1"' in output and '"bad"' in errors
    again = json.loads(retried.stdout)
    assert again["request_counts"]["total"] == 1
    assert again["metadata"] == {"retry_of": batch["id"]}
    assert finished.returncode == 1 and "cannot be cancelled" in finished.stderr
    assert unknown.returncode == 1 and "batch_nope" in unknown.stderr


def readme_batch_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## Batch API\n", 1)[1].split("\n## ", 1)[0]


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.mark.integration
def test_the_readme_batch_api_section_runs_as_written(api: ApiServer, tmp_path: Path) -> None:
    section = readme_batch_section()
    (requests,) = blocks(section, "jsonl")
    (example,) = blocks(section, "py")
    (tmp_path / "requests.jsonl").write_text(requests)
    commands = [
        line.split("#", 1)[0].strip()
        for block in blocks(section, "shell")
        for line in block.splitlines()
        if line.startswith("kcw batch")
    ]

    done = subprocess.run(
        [sys.executable, "-c", example.replace("http://127.0.0.1:8100", api.url)],
        env=api.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed") and '"custom_id": "q2"' in done.stdout

    batch_id = ""
    assert [c.split()[2] for c in commands] == [
        "submit",
        "list",
        "status",
        "download",
        "retry",
        "cancel",
    ]
    for command in commands:
        args = shlex.split(command.replace("<batch id>", batch_id))[1:]
        ran = run_kcw(args, api.env, tmp_path, timeout=600)
        if args[1] == "submit":
            batch_id = json.loads(ran.stdout)["id"]
            assert ran.returncode == 0, ran.stderr
        elif args[1] == "retry":  # nothing failed, so there is nothing to retry
            assert ran.returncode == 2 and "no failed lines" in ran.stderr, ran.stderr
        elif args[1] == "cancel":  # a completed batch cannot be cancelled
            assert ran.returncode == 1 and "cannot be cancelled" in ran.stderr, ran.stderr
        else:
            assert ran.returncode == 0, f"{command}\n{ran.stdout}\n{ran.stderr}"
    assert (tmp_path / f"{batch_id}_output.jsonl").read_text().count("custom_id") == 2
