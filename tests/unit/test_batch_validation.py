"""Batch input files: every bad line is refused with its number and reason; good files indexed."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from worker.batches.validation import MAX_PROBLEMS, index_input, read_line

ENDPOINT = "/v1/chat/completions"


def line(custom_id: str = "a", **changes: Any) -> dict[str, Any]:
    request = {
        "custom_id": custom_id,
        "method": "POST",
        "url": ENDPOINT,
        "body": {"messages": [{"role": "user", "content": "hi"}]},
    }
    request.update(changes)
    return {k: v for k, v in request.items() if v is not None}


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"".join(
            (item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n"
            for item in lines
        )
    )
    return path


def check(path: Path, endpoint: str = ENDPOINT, max_lines: int = 50_000) -> Any:
    return index_input(path, endpoint, max_lines, 200 * 1024 * 1024)


def test_a_good_file_is_indexed_by_offset_and_custom_id(tmp_path: Path) -> None:
    path = write(tmp_path, line("a"), b"", line("b"), line("c"))

    index, problems = check(path)

    assert problems == []
    assert index.custom_ids == ["a", "b", "c"]
    with path.open("rb") as source:
        assert [read_line(source, at)["custom_id"] for at in index.offsets] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("bad", "code", "param"),
    [
        (b'{"custom_id": "b",', "invalid_json", None),
        (b"\xff\xfe not utf-8", "invalid_json", None),
        (json.dumps([1, 2]).encode(), "invalid_request", None),
        (line(custom_id=None), "missing_custom_id", "custom_id"),
        (line(custom_id=""), "missing_custom_id", "custom_id"),
        (line(custom_id=7), "missing_custom_id", "custom_id"),
        (line("a"), "duplicate_custom_id", "custom_id"),
        (line("b", method="GET"), "invalid_method", "method"),
        (line("b", url="/v1/embeddings"), "mismatched_url", "url"),
        (line("b", body="text"), "invalid_body", "body"),
        (line("b", body=None), "invalid_body", "body"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(
    tmp_path: Path, bad: Any, code: str, param: str | None
) -> None:
    index, problems = check(write(tmp_path, line("a"), bad, line("c")))

    assert len(index) == 0
    assert [(p.line, p.code, p.param) for p in problems] == [(2, code, param)]
    assert problems[0].message.startswith("Line 2")


def test_every_bad_line_is_reported_up_to_a_limit(tmp_path: Path) -> None:
    path = write(tmp_path, *[line("same") for _ in range(MAX_PROBLEMS + 50)])

    _, problems = check(path)

    assert len(problems) == MAX_PROBLEMS
    assert problems[0].line == 2


def test_too_many_lines(tmp_path: Path) -> None:
    path = write(tmp_path, *[line(str(n)) for n in range(4)])

    _, problems = check(path, max_lines=3)

    assert [(p.line, p.code) for p in problems] == [(4, "too_many_lines")]
    assert "BATCH_MAX_LINES" in problems[0].message


def test_too_large(tmp_path: Path) -> None:
    path = write(tmp_path, line("a"))

    _, problems = index_input(path, ENDPOINT, 10, max_bytes=10)

    assert [p.code for p in problems] == ["file_too_large"]


def test_an_empty_file(tmp_path: Path) -> None:
    _, problems = check(write(tmp_path, b""))

    assert [p.code for p in problems] == ["empty_file"]


def test_a_job_kind_body_is_checked_against_its_input_model(tmp_path: Path) -> None:
    endpoint = "/kcw/v1/classify"
    good = line("a", url=endpoint, body={"text": "fine", "labels": ["x", "y"]})
    bad = line("b", url=endpoint, body={"text": "fine", "labels": ["only-one"]})

    _, problems = check(write(tmp_path, good, bad), endpoint=endpoint)

    assert [(p.line, p.code) for p in problems] == [(2, "invalid_body")]
    assert "labels" in problems[0].message


def test_read_line_reads_only_its_line() -> None:
    source = io.BytesIO(b'{"a": 1}\n{"b": 2}\n')

    assert read_line(source, 9) == {"b": 2}
