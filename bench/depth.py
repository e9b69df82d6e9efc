"""How deep to fill llama-server: requests in flight at its slot count against slots + 2.

    .venv/bin/python -m bench.depth [--repeats 4] [--waves 20]

The worker's window on llama-server decides how many requests it holds in flight. With
more in flight than slots, the extras wait in the server's own queue, ready for the next
free slot; with exactly the slots, a freed slot waits for the worker to send the next one.
This measures both ways, interleaved and repeated: direct at slots and slots + 2, and
our pipeline with its window at slots + 2 and at slots (`LLM_MAX_INFLIGHT`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.counters import CounterSampler
from bench.direct import direct
from bench.phase import PhaseResult
from bench.queued import celery_worker, client_app, pool_size, run_jobs
from bench.run import slots
from bench.stats import interval
from bench.workload import chat_bodies
from worker.ops.llm_servers import start_launcher
from worker.ops.processes import stop
from worker.ops.redis_server import start_redis
from worker.ops.workers import worker_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--waves", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kcw-bench-depth-"))
    rates: dict[str, list[float]] = {}
    with ExitStack() as stack:
        rserver = start_redis(tmp, secrets.token_urlsafe(16))
        stack.callback(stop, rserver.proc)
        llm = start_launcher(tmp)
        stack.callback(llm.stop)
        n_slots = slots(llm.url) or 8
        jobs = args.waves * n_slots
        env = worker_env(
            os.environ, redis_port=rserver.port, redis_password=rserver.password, llm_url=llm.url
        )
        apps = {}
        for db, (name, extra) in enumerate(
            [("deep", {}), ("exact", {"LLM_MAX_INFLIGHT": str(n_slots)})]
        ):
            app = client_app(rserver, db)
            stack.callback(app.close)
            worker_env_db = {**env, **extra, "REDIS_DB": str(db)}
            stack.enter_context(celery_worker(tmp, worker_env_db, app, name, "worker"))
            apps[name] = (app, rserver.client(db=db), pool_size(app, name))
        setups = [f"direct {n_slots}", f"direct {n_slots + 2}", "pipeline deep", "pipeline exact"]
        for r in range(args.repeats):
            shift = r % len(setups)
            for setup in setups[shift:] + setups[:shift]:
                bodies = chat_bodies(jobs, args.max_tokens, f"{setup}-{r}")
                with CounterSampler(llm.url) as sampler:
                    begin = time.time()
                    if setup.startswith("direct"):
                        done = direct(llm.url, bodies, int(setup.split()[1]))
                    else:
                        app, rds, _ = apps[setup.split()[1]]
                        done = run_jobs(app, rds, "kcw.chat", bodies)
                phase = PhaseResult(setup, "64", r, 0, begin, done, sampler.samples)
                rates.setdefault(setup, []).append(phase.tok_per_s)
                print(
                    f"r{r} {setup:<16} {phase.tok_per_s:7.1f} tok/s "
                    f"(server {phase.server_tok_per_s or 0:7.1f})",
                    flush=True,
                )
    threads = {name: apps[name][2] for name in apps}
    print(f"pool threads: {threads}")
    base = rates[f"direct {n_slots}"]
    for setup, values in rates.items():
        ratio = interval([v / b for v, b in zip(values, base, strict=True)])
        print(
            f"{setup:<16} median {interval(values).median:7.1f} tok/s; / direct {n_slots}: "
            f"{ratio.median:.3f} [{ratio.low:.3f}, {ratio.high:.3f}] {ratio.verdict()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
