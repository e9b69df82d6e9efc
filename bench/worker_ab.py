"""A paired comparison of two versions of the worker: the client-side latency of one job.

    .venv/bin/python -m bench.worker_ab --base <commit> [--pairs 300] [--runs 3]

One worker runs the code of `--base` (checked out into a temporary git worktree), one the
working tree; each on its own Redis db, against the instant stub server. Jobs go one at a
time in triples (direct HTTP, base, head) in a rotated order, so neither worker always goes
first. Per run it prints each worker's overhead over direct HTTP (p50) and the median of the
paired differences head - base with a bootstrap 95% interval. `--base HEAD` is the control:
two workers on the same code.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.direct import served_model, timed_request
from bench.queued import ROOT, celery_worker, client_app, rotated, single_latency
from bench.run import start_instant
from bench.stats import interval, percentile
from bench.workload import chat_bodies, paired_bodies
from worker.broker import close_app
from worker.ops.processes import stop
from worker.ops.redis_server import start_redis
from worker.ops.workers import worker_env

__all__ = ["main"]

JSON = dict[str, Any]


@contextmanager
def checkout(commit: str, tmp: Path) -> Iterator[Path]:
    """A detached git worktree of `commit`, removed on exit."""
    path = tmp / "base"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def compare(base: str, pairs: int, runs: int) -> list[JSON]:
    tmp = Path(tempfile.mkdtemp(prefix="kcw-worker-ab-"))
    out: list[JSON] = []
    with ExitStack() as stack:
        code = stack.enter_context(checkout(base, tmp))
        redis_server = start_redis(tmp, secrets.token_urlsafe(16))
        stack.callback(stop, redis_server.proc)
        llm = start_instant(tmp)
        stack.callback(llm.stop)
        env = worker_env(
            os.environ,
            redis_port=redis_server.port,
            redis_password=redis_server.password,
            llm_url=llm.url,
        )
        apps = {}
        for db, (name, where) in enumerate((("base", code), ("head", ROOT))):
            app = client_app(redis_server, db)
            stack.callback(close_app, app)
            worker_vars = {**env, "REDIS_DB": str(db)}
            stack.enter_context(celery_worker(tmp, worker_vars, app, name, "worker", code=where))
            apps[name] = app
        model = served_model(llm.url)
        client = stack.enter_context(httpx.Client(base_url=llm.url, timeout=60))

        def queued(name: str) -> Callable[[JSON], float]:
            return lambda body: single_latency(apps[name], "kcw.chat", body)

        arms = [lambda body: timed_request(client, model, body), queued("base"), queued("head")]
        for run in range(runs):
            warm = chat_bodies(len(arms), 1, f"ab-warm{run}")
            for measure, body in zip(arms, warm, strict=True):
                measure(body)  # warm each path once
            bodies = paired_bodies(pairs, len(arms), 1, f"ab{run}")
            plain, on_base, on_head = rotated(arms, pairs, bodies)
            over = {
                "base": [q - d for q, d in zip(on_base, plain, strict=True)],
                "head": [q - d for q, d in zip(on_head, plain, strict=True)],
            }
            diffs = [h - b for h, b in zip(on_head, on_base, strict=True)]
            spread = interval(diffs)
            row = {
                "run": run,
                "pairs": pairs,
                "base_overhead_p50_ms": ms(percentile(over["base"], 50)),
                "head_overhead_p50_ms": ms(percentile(over["head"], 50)),
                "head_minus_base_median_ms": ms(statistics.median(diffs)),
                "interval_ms": [ms(spread.low), ms(spread.high)],
            }
            print(row, flush=True)
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="latency of one job: a base commit's worker")
    parser.add_argument("--base", required=True, help="the commit to compare against (HEAD~1)")
    parser.add_argument("--pairs", type=int, default=300, help="triples per run (300)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.runs < 1:
        parser.error("--pairs and --runs must be at least 1")
    compare(args.base, args.pairs, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
