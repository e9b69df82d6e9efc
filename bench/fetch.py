"""What the atomic fetch costs: stock kombu (`REDIS_FETCH=brpop`) against ours (`atomic`).

    .venv/bin/python -m bench.fetch [--jobs 2000] [--repeats 5]

A no-op task (`bench.noop_tasks`), so the queue is all there is to measure: each repeat
starts one worker per fetch, in alternating order, submits the same number of jobs at once
and reads the steady-state rate (middle 80% of the jobs, timed at the client). It also
counts the Redis commands the run caused (`INFO commandstats`), per job. The ratio
atomic / stock of jobs per second is reported per repeat, with the median and a bootstrap
95% interval; "indistinguishable" when the interval holds 1.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.phase import PhaseResult
from bench.queued import celery_worker, client_app, run_jobs
from bench.stats import interval
from worker.ops.processes import stop
from worker.ops.redis_server import RedisServer, start_redis
from worker.ops.workers import worker_env

FETCHES = ("brpop", "atomic")


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def one_run(tmp: Path, server: RedisServer, fetch: str, jobs: int, db: int) -> tuple[float, float]:
    """Jobs per second and Redis commands per job of one worker with `fetch`."""
    env = {
        **worker_env(
            os.environ,
            redis_port=server.port,
            redis_password=server.password,
            llm_url="http://127.0.0.1:9",
        ),
        "REDIS_FETCH": fetch,
        "REDIS_DB": str(db),
    }
    app = client_app(server, db)
    rds = server.client(db=db)
    payloads = [{"n": n} for n in range(jobs)]
    try:
        with celery_worker(
            tmp, env, app, f"{fetch}{db}", "bench.noop_tasks", "-P", "threads", "-c", "8"
        ):
            run_jobs(app, rds, "bench.noop", payloads[:200])
            before = command_calls(rds)
            begin = time.time()
            run = PhaseResult(
                fetch, "noop", 0, 8, begin, run_jobs(app, rds, "bench.noop", payloads)
            )
            after = command_calls(rds)
    finally:
        app.close()
        rds.close()
    commands = sum(after.values()) - sum(before.values())
    return run.jobs_per_s, commands / jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kcw-bench-fetch-") as name:
        tmp = Path(name)
        server = start_redis(tmp, secrets.token_urlsafe(16))
        try:
            ratios: list[float] = []
            per_job: dict[str, list[float]] = {fetch: [] for fetch in FETCHES}
            db = 1
            for repeat in range(args.repeats):
                order = FETCHES if repeat % 2 == 0 else FETCHES[::-1]
                rates: dict[str, float] = {}
                for fetch in order:
                    rates[fetch], commands = one_run(tmp, server, fetch, args.jobs, db)
                    per_job[fetch].append(commands)
                    db += 1
                ratios.append(rates["atomic"] / rates["brpop"])
                print(
                    f"repeat {repeat + 1}: brpop {rates['brpop']:7.1f} jobs/s, "
                    f"atomic {rates['atomic']:7.1f} jobs/s, ratio {ratios[-1]:.3f}",
                    flush=True,
                )
        finally:
            stop(server.proc)
    summary = interval(ratios)
    print(
        f"atomic / brpop jobs per second: median {summary.median:.3f}, 95% interval "
        f"[{summary.low:.3f}, {summary.high:.3f}] over {summary.n} repeats: {summary.verdict()}"
    )
    for fetch in FETCHES:
        print(f"Redis commands per job, {fetch}: median {statistics.median(per_job[fetch]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
