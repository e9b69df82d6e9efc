"""File objects on disk, and a batch's output files: limits, atomic uploads, crash recovery."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from worker.batches.files import FileStore
from worker.batches.lines import failure
from worker.batches.outputs import OutputFiles, error_line, output_line, truncate_torn_tail
from worker.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    LLMServerDown,
    NotFound,
    PayloadTooLarge,
)


def test_an_upload_is_stored_listed_read_and_deleted(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    obj = store.upload(io.BytesIO(b'{"a": 1}\n{"b": 2}\n'), "in.jsonl", 1000, 10)

    assert (obj.bytes, obj.filename, obj.purpose, obj.object) == (18, "in.jsonl", "batch", "file")
    assert store.get(obj.id) == obj
    assert [o.id for o in store.list()] == [obj.id]
    assert b"".join(store.read(obj.id)) == b'{"a": 1}\n{"b": 2}\n'
    store.delete(obj.id)
    with pytest.raises(NotFound, match=obj.id):
        store.get(obj.id)
    assert list(tmp_path.joinpath("files").iterdir()) == []


def test_an_upload_over_the_size_limit_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)

    with pytest.raises(PayloadTooLarge, match="BATCH_MAX_BYTES"):
        store.upload(io.BytesIO(b"x\n" * 100), "big.jsonl", 50, 1000)

    assert list(tmp_path.joinpath("files").iterdir()) == []


@pytest.mark.parametrize("content", [b"a\nb\nc\nd\n", b"a\nb\nc\nd"])
def test_an_upload_over_the_line_limit_is_refused(tmp_path: Path, content: bytes) -> None:
    store = FileStore(tmp_path)

    with pytest.raises(InvalidRequest, match="BATCH_MAX_LINES"):
        store.upload(io.BytesIO(content), "long.jsonl", 1000, 3)

    assert store.list() == []


def test_file_ids_are_checked_before_touching_the_disk(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        FileStore(tmp_path).get("../../etc/passwd")


def test_publish_is_idempotent(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.content_path("file-out1").write_bytes(b"{}\n")

    first = store.publish("file-out1", "b_output.jsonl", 100)
    again = store.publish("file-out1", "b_output.jsonl", 100)

    assert first == again
    assert (first.bytes, first.purpose) == (3, "batch_output")


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"custom_id": "a"}\n{"custom_id": "b"}\n{"custom_id": "c", "resp')

    truncate_torn_tail(path)

    assert path.read_bytes() == b'{"custom_id": "a"}\n{"custom_id": "b"}\n'


def test_a_file_of_one_torn_line_becomes_empty(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"custom_id": "a", "resp')

    truncate_torn_tail(path)

    assert path.read_bytes() == b""


def test_recover_rebuilds_done_lines_counts_and_usage(tmp_path: Path) -> None:
    files = OutputFiles(tmp_path / "out.jsonl", tmp_path / "err.jsonl")
    ok = {"status_code": 200, "body": {"usage": {"prompt_tokens": 5, "completion_tokens": 3}}}
    files.append(
        [output_line("batch_1", 0, "a", ok), output_line("batch_1", 1, "b", ok)],
        [error_line("batch_1", 2, "c", failure(ContextLengthExceeded("too long")))],
    )
    with (tmp_path / "out.jsonl").open("ab") as sink:
        sink.write(b'{"id": "batch_req_x", "custom_id": "d", "resp')

    tally = files.recover()

    assert tally.completed == {"a", "b"}
    assert tally.failed == {"c"}
    assert (tally.usage.prompt_tokens, tally.usage.completion_tokens) == (10, 6)
    assert (tmp_path / "out.jsonl").read_bytes().endswith(b"\n")


def test_a_failed_line_carries_our_error_class_and_message() -> None:
    line = error_line("batch_1", 3, "q-3", failure(LLMServerDown("server down: start it")))

    assert line["custom_id"] == "q-3"
    assert line["error"] == {"code": "LLMServerDown", "message": "server down: start it"}
    assert line["response"]["status_code"] == 503
    assert line["response"]["body"]["error"]["message"] == "server down: start it"
    json.dumps(line)


def test_output_lines_have_openais_shape() -> None:
    outcome = {"status_code": 200, "request_id": "r1", "body": {"choices": []}}

    line = output_line("batch_1", 0, "a", outcome)

    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["response"] == {"status_code": 200, "request_id": "r1", "body": {"choices": []}}
    assert line["id"] == output_line("batch_1", 0, "a", outcome)["id"]
