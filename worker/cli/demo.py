"""`kcw demo`: one real job of each kind through Redis, a worker and the LLM server.

Then, where `kcw serve` answers (`kcw up --api`, as `make demo` starts it), a three-line
batch goes through the Batch API and its output lines are printed.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from worker.cli import exit_codes
from worker.cli.output import wait_visibly
from worker.client import JobClient
from worker.config import ApiSettings
from worker.errors import ApiUnavailable
from worker.jobs import registry
from worker.jobs.kind import JobKind

__all__ = ["BATCH_QUESTIONS", "demo_batch_lines", "demo_jobs", "run_batch_demo", "run_demo"]

BATCH_QUESTIONS = {
    "color": "Name one color. Answer in one word.",
    "fruit": "Name one fruit. Answer in one word.",
    "planet": "Name one planet. Answer in one word.",
}


def demo_jobs() -> list[tuple[JobKind[Any], dict[str, Any]]]:
    """The sample jobs: one of each kind that has a demo the default model can serve."""
    return [(kind, kind.demo.payload()) for kind in registry.kinds() if kind.demo is not None]


def run_demo(client: JobClient, timeout: float, out: TextIO, err: TextIO) -> int:
    """Submit every sample job at once, then wait for each and print what it gave."""
    started = time.monotonic()
    jobs = [(kind, payload, client.submit(kind.name, payload)) for kind, payload in demo_jobs()]
    out.write(f"submitted {len(jobs)} jobs; a worker runs them against the LLM server\n")
    failures = 0
    for kind, payload, job in jobs:
        assert kind.demo is not None
        out.write(f"\n== {kind.name}: {kind.demo.brief(payload)}\n")
        out.flush()
        wait_visibly(job, timeout, err)
        if job.status() == "SUCCESS":
            value = job.result()
            tokens = value["usage"]["total_tokens"]
            out.write(f"-> {kind.demo.highlight(value)}\n")
            out.write(
                f"   job {job.id}: {tokens} tokens, done at {time.monotonic() - started:.1f}s\n"
            )
        else:
            failures += 1
            error = job.error()
            out.write(f"-> FAILED: {type(error).__name__}: {error}\n")
    out.write(
        f"\n{len(jobs) - failures}/{len(jobs)} demo jobs succeeded; "
        "`kcw result <job id>` shows any of them in full\n"
    )
    return exit_codes.FAILED if failures else exit_codes.OK


def demo_batch_lines() -> list[dict[str, Any]]:
    """The demo batch: one short chat request a line, as the OpenAI Batch API takes them."""
    return [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": question}], "max_tokens": 16},
        }
        for custom_id, question in BATCH_QUESTIONS.items()
    ]


def run_batch_demo(settings: ApiSettings, timeout: float, out: TextIO, err: TextIO) -> int:
    """Upload the demo batch to `kcw serve`, follow it to its end, and print each answer."""
    from worker.cli.batch_http import BatchApi
    from worker.cli.batch_progress import follow

    with BatchApi(settings) as api, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo-batch.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in demo_batch_lines()))
        try:
            uploaded = api.upload(path)
        except ApiUnavailable:
            out.write(
                f"\nThe Batch API is not running at {api.url}, so the batch demo is skipped: "
                "start it with `kcw serve` (or `kcw up --api`) and run `kcw demo` again.\n"
            )
            return exit_codes.OK
        batch = api.create(uploaded["id"], "/v1/chat/completions", {"source": "kcw demo"})
        out.write(f"\n== batch {batch['id']}: {len(BATCH_QUESTIONS)} lines through {api.url}\n")
        out.flush()
        batch = follow(lambda: api.batch(batch["id"]), err, timeout)
        counts = batch["request_counts"]
        out.write(
            f"-> {batch['status']}: {counts['completed']} completed, {counts['failed']} failed "
            f"of {counts['total']}\n"
        )
        if batch.get("output_file_id"):
            for raw in api.content(batch["output_file_id"]).splitlines():
                line = json.loads(raw)
                body = line["response"]["body"]
                answer = body["choices"][0]["message"]["content"].strip()
                out.write(f"   {line['custom_id']}: {answer!r}\n")
        out.write(f"   `kcw batch download {batch['id']}` saves its output file\n")
    ok = batch["status"] == "completed" and counts["failed"] == 0
    return exit_codes.OK if ok else exit_codes.FAILED
