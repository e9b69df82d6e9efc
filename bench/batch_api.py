"""Phase (e), the Batch API, and the interactive probe that runs beside a big batch.

(e) uploads a JSONL file of chat lines to `kcw serve` with the official `openai` SDK,
creates a batch and polls it; each poll's `request_counts.completed` and `usage` give the
finish times and tokens. The probe sends `kcw.chat` jobs one at a time while a 2,000-line
batch runs, through a timing proxy, and compares each job's latency (send to result read)
with the latency of the batch's own requests served in the same moments.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from typing import Any

import httpx
import openai
from celery import Celery

from bench.phase import Completion
from bench.queued import single_latency

__all__ = ["batch_lines", "interactive_probe", "run_batch"]

JSON = dict[str, Any]
CHAT = "/v1/chat/completions"
ENDED = ("completed", "failed", "expired", "cancelled")


def batch_lines(bodies: list[JSON]) -> bytes:
    """A batch input file: one chat line per body, `custom_id` = its index."""
    return b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": b}).encode()
        + b"\n"
        for i, b in enumerate(bodies)
    )


def sdk(api_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api_url}/v1", api_key=key or "none", max_retries=5)


def start_batch(client: openai.OpenAI, bodies: list[JSON]) -> str:
    uploaded = client.files.create(file=("bench.jsonl", batch_lines(bodies)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def run_batch(
    api_url: str, key: str, bodies: list[JSON], poll: float = 0.25
) -> tuple[float, list[Completion], JSON]:
    """Run one batch to its end; (created at, completions from the polls, final figures)."""
    client = sdk(api_url, key)
    created = time.time()
    batch_id = start_batch(client, bodies)
    completions: list[Completion] = []
    seen_lines, seen_tokens = 0, 0
    while True:
        batch = client.batches.retrieve(batch_id)
        now = time.time()
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts else 0
        tokens = batch.usage.output_tokens if batch.usage else 0
        if done > seen_lines:
            share = (tokens - seen_tokens) / (done - seen_lines)
            completions += [
                Completion(created, now, round(share)) for _ in range(done - seen_lines)
            ]
            seen_lines, seen_tokens = done, tokens
        if batch.status in ENDED:
            break
        time.sleep(poll)
    output = client.files.content(batch.output_file_id).text if batch.output_file_id else ""
    ids = {json.loads(line)["custom_id"] for line in output.splitlines()}
    figures = {
        "batch_status": batch.status,
        "output_lines": len(output.splitlines()),
        "distinct_custom_ids": len(ids),
        "failed_lines": counts.failed if counts else None,
        "usage_output_tokens": tokens,
    }
    if batch.status != "completed" or len(ids) != len(bodies):
        raise RuntimeError(f"the bench batch ended {batch.status} with {figures}")
    return created, completions, figures


def interactive_probe(
    api_url: str,
    key: str,
    proxy_url: str,
    app: Celery,
    batch_bodies: list[JSON],
    probe_bodies: list[JSON],
    warm_lines: int,
) -> JSON:
    """Send `probe_bodies` as `kcw.chat` jobs one by one while a big batch runs; then cancel it.

    Returns each probe's latency and the median latency of the batch requests that ran
    while it waited, as the timing proxy saw them.
    """
    client = sdk(api_url, key)
    batch_id = start_batch(client, batch_bodies)
    deadline = time.monotonic() + 1800
    while True:
        batch = client.batches.retrieve(batch_id)
        counts = batch.request_counts
        if batch.status == "in_progress" and counts and counts.completed >= warm_lines:
            break
        if batch.status in ENDED or time.monotonic() > deadline:
            raise RuntimeError(f"the probe's batch is {batch.status} ({counts}) before the probe")
        time.sleep(0.5)
    probes: list[tuple[float, float, float]] = []
    for body in probe_bodies:
        start = time.time()
        latency = single_latency(app, "kcw.chat", body)
        probes.append((start, start + latency, latency))
    backlog = client.batches.retrieve(batch_id).request_counts
    # A short batch may have ended while the probes ran: then there is nothing to cancel.
    with contextlib.suppress(openai.ConflictError):
        client.batches.cancel(batch_id)
    timings = httpx.get(f"{proxy_url}/_timings", timeout=30).json()
    rows = []
    for start, end, latency in probes:
        batch_lat = [
            t["end"] - t["start"]
            for t in timings
            if t["path"] == CHAT and t["end"] >= start and t["start"] <= end and is_line(t)
        ]
        median = statistics.median(batch_lat) if batch_lat else float("nan")
        rows.append(
            {
                "latency_s": round(latency, 3),
                "batch_median_s": round(median, 3),
                "ratio": round(latency / median, 3) if batch_lat else None,
                "batch_requests_seen": len(batch_lat),
            }
        )
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    while client.batches.retrieve(batch_id).status not in ENDED:
        time.sleep(0.5)
    return {
        "batch_lines": len(batch_bodies),
        "lines_done_before_probe": warm_lines,
        "batch_backlog_at_end": (
            len(batch_bodies) - backlog.completed - backlog.failed if backlog else None
        ),
        "probes": rows,
        "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
        "ratio_max": round(max(ratios), 3) if ratios else None,
    }


def is_line(timing: JSON) -> bool:
    """A batch line's request: its job id is `<batch id>:<line>:<attempt>`; a kcw.chat
    job's is a plain UUID."""
    return str(timing["id"]).startswith("batch_")
