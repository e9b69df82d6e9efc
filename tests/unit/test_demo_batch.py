"""The demo's batch is a file the Batch API accepts as it stands."""

from __future__ import annotations

import json
from pathlib import Path

from worker.batches.validation import index_input
from worker.cli.demo import BATCH_QUESTIONS, demo_batch_lines


def test_the_demo_batch_passes_the_batch_apis_checks(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in demo_batch_lines()))

    index, problems = index_input(path, "/v1/chat/completions", 50_000, 200 * 2**20)

    assert problems == []
    assert list(index.custom_ids) == list(BATCH_QUESTIONS)
