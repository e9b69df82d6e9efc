"""The benchmark: direct load, our pipeline, naive Celery, plain llama-server and the Batch API,
interleaved and repeated in one run, with intervals.

    .venv/bin/python -m bench.run --backend llamacpp|vllm|instant [--repeats 5] [--smoke]

Setups, each sent the same work (unique prompts, exactly `max_tokens` generated):
  (a) direct: an asyncio client straight to `/v1/chat/completions`, a bounded number in
      flight; its best concurrency (a short sweep first) is the server's limit;
  (b) pipeline: `kcw.chat` jobs through Redis to `celery -A worker worker`, defaults;
  (c) naive: the same jobs to `celery worker -P prefork -c <cores>`;
  (d) plain llama-server (llama.cpp only): upstream `llama-server` with only its model, host,
      port and `--metrics`, at its best concurrency;
  (e) Batch API: one chat batch through `kcw serve`, driven with the `openai` SDK.
Every repeat runs every setup once; setups compared in a ratio run next to each other, in
parts that take turns, mirrored around the last of them ((a), (b), (a), (b), (e), (b), (a),
(b), (a)), so each one's time is centred on the same moment; these groups rotate from
repeat to repeat. Rates come from the
steady state (at least the middle 80% of a phase's tokens or jobs, its edges at whole
waves), from the jobs' `usage` and from the server's own token counter. Ratios are per
repeat; the report gives their median and a bootstrap 95% interval. CPU seconds per job of
the workers, Redis and `kcw serve` come from /proc.

Also measured once per run: the queue's latency from the client's side (`send_task` to
the result read) against direct HTTP, in interleaved pairs, idle and under load; on
llama.cpp, the engine's own limit (`llama-batched-bench`); on the LLM servers, a `kcw.chat`
job's latency while a 2,000-line batch runs; on the instant server, jobs/s with 1, 2 and 4
worker processes beside a no-op Celery task.

Results go to `bench/results/<machine>-<date>.json`, one key per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from bench import batch_api
from bench.counters import CounterSampler
from bench.direct import direct, served_model, steady, timed_request
from bench.phase import Completion, PhaseResult, served_at_once
from bench.procs import cpu_seconds
from bench.provenance import code_commit, cpu_ids, cpu_model
from bench.queued import (
    celery_worker,
    client_app,
    pool_size,
    rotated,
    run_jobs,
    single_latency,
)
from bench.stats import interval, percentile
from bench.workload import chat_bodies, paired_bodies
from worker.config import WorkerSettings
from worker.errors import NotRunnableHere
from worker.llm.limits import window_for
from worker.ops.api_server import start_api
from worker.ops.llm_servers import MODEL, LLMServer, start_launcher, start_vllm, wait_healthy
from worker.ops.processes import free_port, spawn, stop
from worker.ops.redis_server import RedisServer, start_redis
from worker.ops.workers import worker_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
JSON = dict[str, Any]
Action = Callable[[], list[Completion]]
# A setup's phase in one repeat: (repeat, part, parts) -> its figures, unrecorded.
Phase = Callable[[int, int, int], PhaseResult]
# Fewest jobs in a measured phase, so even a 2-wide phase has a steady state to measure.
MIN_JOBS = 40
# Turns of a unit's compared setups on each side of its last one (see repeat_schedule).
PASSES = 2


# ---------------------------------------------------------------- servers and processes


def start_instant(tmp: Path) -> LLMServer:
    port = free_port()
    log = tmp / f"instant-{port}.log"
    argv = [sys.executable, "-m", "bench.instant_server", "--port", str(port)]
    server = LLMServer(port, spawn(argv, log, cwd=ROOT), log)
    wait_healthy(server, 30, "instant server")
    return server


def start_plain_llama_server(tmp: Path) -> LLMServer:
    """Upstream `llama-server` with its own defaults (model, host, port; `--metrics` to count)."""
    done = subprocess.run(
        [str(ROOT / "scripts/llama-server-env"), "path"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError("llama-server is not built: run `make llama-server`")
    port = free_port()
    log = tmp / f"plain-llama-server-{port}.log"
    argv = [done.stdout.strip(), "-m", str(MODEL), "--host", "127.0.0.1", "--port", str(port)]
    server = LLMServer(port, spawn([*argv, "--metrics"], log, cwd=tmp), log)
    wait_healthy(server, 120, "plain llama-server")
    return server


def start_timing_proxy(tmp: Path, upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.timing_proxy", "--port", str(port)]
    proc = spawn([*argv, "--upstream", upstream], tmp / "timing-proxy.log", cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    server = LLMServer(port, proc, tmp / "timing-proxy.log")
    wait_healthy(server, 30, "timing proxy")
    return url, proc


def slots(url: str) -> int | None:
    """llama-server's slot count from `/props`; None for servers without it."""
    try:
        response = httpx.get(f"{url}/props", timeout=10)
        return int(response.json()["total_slots"]) if response.status_code == 200 else None
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def machine() -> JSON:
    """What the figures depend on: CPU model, cores, platform, llama.cpp build, commit."""
    stamp = None
    done = subprocess.run(
        [str(ROOT / "scripts/llama-server-env"), "path"], capture_output=True, text=True
    )
    if done.returncode == 0:
        marker = Path(done.stdout.strip()).parents[1] / ".kcw-llama-server-built"
        stamp = marker.read_text().strip() if marker.exists() else None
    return {
        "cpu": cpu_model(),
        **cpu_ids(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_build": stamp,
        "commit": code_commit("worker", "tasks", "bench"),
        "host": socket.gethostname(),
    }


def machine_slug(info: JSON) -> str:
    """`amd-epyc-f25-2c`: the CPU's name and family (a VM's name alone can hide which
    generation ran), and its cores; one results file per machine and day."""
    cpu = re.sub(r"[^a-z0-9]+", "-", str(info["cpu"]).lower()).strip("-")
    family = f"-f{info['cpu_family']}" if info.get("cpu_family") is not None else ""
    return f"{cpu[:40]}{family}-{info['cores']}c"


# ---------------------------------------------------------------- the bench


class Bench:
    """The processes of one run and the phases measured on them."""

    def __init__(self, args: argparse.Namespace, tmp: Path, stack: ExitStack) -> None:
        self.args, self.tmp, self.stack = args, tmp, stack
        self.backend: str = args.backend
        self.llm_like = self.backend != "instant"
        self.redis: RedisServer = start_redis(tmp, secrets.token_urlsafe(16))
        stack.callback(stop, self.redis.proc)
        self.llm = self._start_server()
        stack.callback(self.llm.stop)
        self.env = worker_env(
            os.environ,
            redis_port=self.redis.port,
            redis_password=self.redis.password,
            llm_url=self.llm.url,
        )
        self.phases: list[PhaseResult] = []
        self.apps: dict[str, tuple[Celery, redis.Redis, int]] = {}
        self.best_a = 1
        self.server_width: int | None = None  # llama-server's slots, once known

    def _start_server(self) -> LLMServer:
        if self.backend == "llamacpp":
            return start_launcher(self.tmp)
        if self.backend == "vllm":
            return start_vllm(self.tmp)
        return start_instant(self.tmp)

    def worker(
        self, name: str, db: int, module: str = "worker", *extra: str, **env_extra: str
    ) -> int:
        """Start a worker on its own Redis db; returns its pid."""
        app = client_app(self.redis, db)
        rds = self.redis.client(db=db)
        self.stack.callback(app.close)
        env = {**self.env, "REDIS_DB": str(db), **env_extra}
        proc = self.stack.enter_context(celery_worker(self.tmp, env, app, name, module, *extra))
        self.apps[name] = (app, rds, proc.pid)
        return proc.pid

    def measure(
        self,
        setup: str,
        workload: str,
        repeat: int,
        concurrency: int,
        counter_url: str | None,
        pids: dict[str, int],
        action: Action,
        server_width: int | None = None,
    ) -> PhaseResult:
        """Run `action` as one phase (or part of one), without recording it; `server_width` is
        the server's parallel requests when it is not the bench's own server (plain
        llama-server's slots)."""
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sampler = CounterSampler(counter_url) if counter_url else None
        with sampler or nullcontext():
            begin = time.time()
            completions = action()
        return PhaseResult(
            setup,
            workload,
            repeat,
            concurrency,
            begin,
            completions,
            counter=sampler.samples if sampler else [],
            cpu_s={name: cpu_seconds(pid) - before[name] for name, pid in pids.items()},
            server_width=server_width or self.server_width,
        )

    def record(self, result: PhaseResult, part: str = "") -> None:
        """Print a phase's figures; keep them unless they are only `part` of its phase."""
        if not part:
            self.phases.append(result)
        summary = result.summary()
        server = summary["server_tok_per_s"]
        print(
            f"  r{result.repeat} {result.setup:<12} {result.workload:>4} tok"
            f" c={result.concurrency:<3} jobs={result.jobs:<5}"
            f" {summary['jobs_per_s']:8.2f} jobs/s {summary['tok_per_s']:8.1f} tok/s"
            f" (server {server if server is not None else '-'})"
            f" p50 {summary['p50_ms']:8.1f} ms cpu/job {summary['cpu_ms_per_job']}{part}",
            flush=True,
        )

    def run_repeat(self, phases: dict[str, Phase], repeat: int, passes: int = PASSES) -> None:
        """Every setup's phase of one repeat, in `repeat_schedule`'s order; a phase run in
        parts is recorded once all of them have run, as one."""
        runs: dict[str, list[PhaseResult]] = {}
        for key, part, parts in repeat_schedule(list(phases), repeat, passes):
            result = phases[key](repeat, part, parts)
            if parts == 1:
                self.record(result)
                continue
            done = runs.setdefault(key, [])
            done.append(result)
            if len(done) < parts:
                self.record(result, f"  (part {part + 1} of {parts})")
            else:
                self.record(PhaseResult.merged(runs.pop(key)))

    # ---- a sweep, to find each server's best concurrency

    def sweep(self, url: str, levels: list[int], max_tokens: int, waves: int) -> tuple[int, JSON]:
        rows = {}
        for level in levels:
            bodies = chat_bodies(max(16, waves * level), max_tokens, f"sweep{level}")
            with CounterSampler(url) as sampler:
                begin = time.time()
                completions = direct(url, bodies, level)
            result = PhaseResult(
                "sweep", str(max_tokens), 0, level, begin, completions, sampler.samples
            )
            rate = result.tok_per_s if self.llm_like else result.jobs_per_s
            rows[level] = round(rate, 2)
            print(
                f"  sweep {url} c={level:<3} {rate:8.1f} {'tok' if self.llm_like else 'jobs'}/s",
                flush=True,
            )
        best = max(rows, key=lambda level: rows[level])
        return best, {"levels": rows, "best": best}


# Setups whose rates are divided by each other run next to each other in every repeat, so
# that a drift of the machine's speed between two distant phases is not read as a ratio.
UNITS = (("a", "b", "e"), ("c",), ("d",), ("a1", "b1", "noop", "boff"))


def repeat_schedule(
    keys: list[str], repeat: int, passes: int = PASSES
) -> list[tuple[str, int, int]]:
    """The phases of one repeat as (setup, part, parts): units of compared setups, rotated
    one place per repeat so no unit always goes first.

    Within a unit every setup but the last runs in `2 * passes` parts: `passes` passes
    over them before the last setup, which runs whole, and the same passes mirrored after
    it: (a, b, a, b, e, b, a, b, a) for two. Every setup's time is then centred on the same
    moment, so a steady drift of the machine's speed slows or speeds up each of them alike;
    and the compared setups take turns often, so a sudden change of speed falls on one
    turn, not on one setup's whole half.
    """
    if passes < 1:
        raise ValueError(f"--passes must be 1 or more, got {passes}")
    units = [[k for k in unit if k in keys] for unit in UNITS]
    units = [u for u in units if u] + [[k] for k in keys if not any(k in u for u in UNITS)]
    shift = repeat % len(units)
    schedule: list[tuple[str, int, int]] = []
    for *outer, middle in units[shift:] + units[:shift]:
        parts = 2 * passes
        schedule += [(key, p, parts) for p in range(passes) for key in outer]
        schedule.append((middle, 0, 1))
        schedule += [(key, p, parts) for p in range(passes, parts) for key in reversed(outer)]
    return schedule


def share(jobs: int, part: int, parts: int) -> int:
    """Jobs of `part` (from 0) when `jobs` are run in `parts` parts."""
    return jobs // parts + (1 if part < jobs % parts else 0)


def direct_concurrency(swept: int, pipeline: int, llm_server: bool) -> int:
    """(a)'s requests in flight: the sweep's best, but on an LLM server never fewer than the
    pipeline keeps in flight (its worker's window).

    Four waves per level cannot tell levels apart that differ by less than the machine's
    drift, and a server runs more requests at once no slower: direct load at fewer in
    flight than the pipeline would be no limit. (The instant stub is the exception: there
    the client's own cost grows with the number in flight.)
    """
    return max(swept, pipeline) if llm_server else swept


def pipeline_in_flight(slot_count: int | None) -> int:
    """Requests the pipeline's worker keeps in flight to the server: its window, sized as
    the worker sizes it (the worker's pool holds more: jobs waiting for room in it)."""
    cap = WorkerSettings.model_fields["llm_max_inflight"].default
    return window_for(slot_count, int(cap))


def levels_for(backend: str, slot_count: int | None) -> list[int]:
    """The concurrencies that matter: slots, slots + 2 and 2x slots; more for vLLM."""
    if slot_count:
        return [slot_count, slot_count + 2, 2 * slot_count]
    return [16, 32, 64] if backend == "vllm" else [8, 32, 64]


def ratio_rows(phases: list[PhaseResult], repeats: int) -> JSON:
    """Per-repeat ratios of steady-state rates, summarized as median and 95% interval."""

    def rate(setup: str, workload: str, repeat: int, key: str) -> float | None:
        for p in phases:
            if (p.setup, p.workload, p.repeat) == (setup, workload, repeat):
                summary = p.summary()
                value = (
                    summary["cpu_ms_per_job"].get("worker")
                    if key == "worker_cpu_ms"
                    else summary[key]
                )
                return float(value) if value is not None else None
        return None

    pairs = [
        ("b/a", "b pipeline", "a direct", "64", "tok_per_s"),
        ("b/a server counter", "b pipeline", "a direct", "64", "server_tok_per_s"),
        ("e/a", "e batch api", "a direct", "64", "tok_per_s"),
        ("e/a server counter", "e batch api", "a direct", "64", "server_tok_per_s"),
        ("b/c", "b pipeline", "c naive", "64", "tok_per_s"),
        ("b/d", "b pipeline", "d plain", "64", "tok_per_s"),
        ("a/d", "a direct", "d plain", "64", "tok_per_s"),
        ("b/a 1-token jobs", "b pipeline", "a direct", "1", "jobs_per_s"),
        ("b/noop jobs", "b pipeline", "noop celery", "1", "jobs_per_s"),
        ("metrics on/off jobs", "b pipeline", "b metrics off", "1", "jobs_per_s"),
        ("metrics on/off worker cpu", "b pipeline", "b metrics off", "1", "worker_cpu_ms"),
    ]
    out: JSON = {}
    for name, top, bottom, workload, key in pairs:
        values = []
        for r in range(repeats):
            num, den = rate(top, workload, r, key), rate(bottom, workload, r, key)
            if num is not None and den:
                values.append(num / den)
        if values:
            out[name] = {**interval(values).as_dict(), "per_repeat": [round(v, 4) for v in values]}
    return out


def setup_rows(phases: list[PhaseResult]) -> JSON:
    """Each setup's rates over the repeats, as median and interval."""
    out: JSON = {}
    keys = sorted({(p.setup, p.workload) for p in phases})
    for setup, workload in keys:
        mine = [p.summary() for p in phases if (p.setup, p.workload) == (setup, workload)]
        row: JSON = {"concurrency": mine[0]["concurrency"], "jobs": mine[0]["jobs"]}
        for key in ("tok_per_s", "server_tok_per_s", "jobs_per_s", "p50_ms", "p95_ms"):
            values = [float(m[key]) for m in mine if m[key] is not None]
            if values:
                row[key] = interval(values).as_dict()
        cpu_keys = {k for m in mine for k in m["cpu_ms_per_job"]}
        row["cpu_ms_per_job"] = {
            k: round(percentile([m["cpu_ms_per_job"][k] for m in mine], 50), 3) for k in cpu_keys
        }
        out[f"{setup} [{workload}]"] = row
    return out


class BackgroundLoad:
    """Direct requests of 64 tokens, each with a prompt of its own, `concurrency` in flight
    for as long as the block runs: a lane sends its next request the moment one ends, so
    the load never drains between rounds."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.url, self.concurrency = url, concurrency
        self.completed = 0
        self._halt = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.completed = steady(
                self.url, lambda: chat_bodies(1, 64, "load")[0], self.concurrency, self._halt
            )
        except BaseException as exc:  # reported by __exit__, in the thread that reads it
            self._error = exc

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        time.sleep(1.0)  # time for every lane to send its first request
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._halt.set()
        self._thread.join(600)
        if self._error is not None:
            raise RuntimeError(
                f"the background load on {self.url} failed: {self._error!r}"
            ) from self._error


def latency_pairs(bench: Bench, pairs: int) -> JSON:
    """Client-side latency of one `kcw.chat` job against one direct request, alternating.

    With metrics off measured too, each triple runs in a rotated order.
    """
    app = bench.apps["b"][0]
    off = bench.apps["boff"][0] if "boff" in bench.apps else None
    url = bench.llm.url
    model = served_model(url)
    out: JSON = {}
    with httpx.Client(base_url=url, timeout=600) as client:

        def one_direct(body: JSON) -> float:
            return timed_request(client, model, body)

        # The load leaves two of the server's parallel requests free (llama-server's
        # slots, which the best concurrency may exceed), so a probe is not timed waiting
        # for a slot.
        width = served_at_once(bench.best_a, bench.server_width)
        for label in ("idle", "under load"):
            load = BackgroundLoad(url, max(1, width - 2)) if label == "under load" else None
            arms: list[Callable[[JSON], float]] = [
                one_direct,
                lambda body: single_latency(app, "kcw.chat", body),
            ]
            if off is not None:
                arms.append(lambda body: single_latency(off, "kcw.chat", body))
            # The arms of a pair (or triple) send the same prompt, each with its own tag.
            bodies = paired_bodies(pairs, len(arms), 1, f"pairs-{label}")
            with load or nullcontext():
                one_direct(chat_bodies(1, 1, f"warm-{label}")[0])
                # Each pair (or triple) in a rotated order, so that no arm always goes first.
                plain, queued, *rest = rotated(arms, pairs, bodies)
            unmetered = rest[0] if rest else []
            diffs = [q - p for q, p in zip(queued, plain, strict=True)]
            out[label] = {
                "pairs": pairs,
                "same_prompts": True,  # results before this field paired unequal prompts
                "pipeline_p50_ms": round(percentile(queued, 50) * 1000, 3),
                "direct_p50_ms": round(percentile(plain, 50) * 1000, 3),
                "overhead_p50_ms": round(percentile(diffs, 50) * 1000, 3),
                "overhead_p95_ms": round(percentile(diffs, 95) * 1000, 3),
            }
            if load is not None:
                out[label]["load_in_flight"] = load.concurrency
                out[label]["load_requests_completed"] = load.completed
            if unmetered:
                # The same pairs through a worker with WORKER_METRICS_PORT=0, interleaved.
                off_diffs = [u - p for u, p in zip(unmetered, plain, strict=True)]
                out[label]["metrics_off_overhead_p50_ms"] = round(
                    percentile(off_diffs, 50) * 1000, 3
                )
                out[label]["metrics_off_overhead_p95_ms"] = round(
                    percentile(off_diffs, 95) * 1000, 3
                )
            print(f"  queue overhead {label}: {out[label]}", flush=True)
    return out


def engine_limit(bench: Bench, prompt_tokens: int, max_tokens: int) -> JSON | None:
    """llama-batched-bench's decode tok/s at the parallel levels that matter."""
    try:
        from bench import limit
    except ImportError:
        return None
    try:
        rows = limit.engine_limit(
            MODEL,
            prompt_tokens,
            max_tokens,
            [1, 2, 4, 8, 10, 16],
            threads=None,
            log=bench.tmp / "batched-bench.log",
        )
    except (RuntimeError, ValueError) as exc:
        print(f"  engine limit skipped: {exc}", flush=True)
        return {"skipped": str(exc)}
    table = {str(r.parallel): round(r.gen_tok_per_s, 2) for r in rows}
    # Generated tokens over prefill plus decode: what a server that prefills each prompt
    # before decoding it would reach at that width.
    whole = {str(r.parallel): round(r.parallel * r.gen_tokens / r.total_s, 2) for r in rows}
    print(f"  llama-batched-bench decode tok/s by parallel sequences: {table}", flush=True)
    return {
        "prompt_tokens": prompt_tokens,
        "gen_tokens": max_tokens,
        "decode_tok_per_s": table,
        "generated_over_total_tok_per_s": whole,
    }


def prompt_tokens_of(url: str) -> int:
    model = served_model(url)
    body = {**chat_bodies(1, 1, "count")[0], "model": model}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600).json()
    return int(reply["usage"]["prompt_tokens"])


def run_backend(args: argparse.Namespace, tmp: Path) -> JSON:
    waves = args.waves
    repeats = args.repeats
    result: JSON = {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    with ExitStack() as stack:
        bench = Bench(args, tmp, stack)
        llm_url = bench.llm.url
        counter_url = llm_url if bench.llm_like else None
        slot_count = slots(llm_url) if args.backend == "llamacpp" else None
        bench.server_width = slot_count
        print(f"{args.backend} up at {llm_url}; slots {slot_count}", flush=True)
        result["slots"] = slot_count
        swept, result["sweep_a"] = bench.sweep(
            llm_url, levels_for(args.backend, slot_count), args.max_tokens, args.sweep_waves
        )
        pid_b = bench.worker("b", 0)
        app_b = bench.apps["b"][0]
        threads_b = pool_size(app_b, "b")
        in_flight_b = pipeline_in_flight(slot_count)
        best_a = direct_concurrency(swept, in_flight_b, bench.llm_like)
        result["sweep_a"]["used"] = best_a
        print(
            f"  (a) runs {best_a} in flight: swept best {swept}, pipeline {in_flight_b}"
            f" in flight (pool {threads_b})"
        )
        bench.best_a = best_a
        redis_pid = bench.redis.proc.pid
        setups: list[tuple[str, str, int, Phase]] = []
        n = max(MIN_JOBS, waves * best_a)
        mt = args.max_tokens
        big = str(mt)

        def a_phase(workload: str, tokens: int, jobs: int) -> Phase:
            return lambda r, part, parts: bench.measure(
                "a direct",
                workload,
                r,
                best_a,
                counter_url,
                {"redis": redis_pid},
                lambda: direct(
                    llm_url, chat_bodies(share(jobs, part, parts), tokens, f"a{r}"), best_a
                ),
            )

        def queued_phase(
            setup: str, name: str, task: str, workload: str, tokens: int, jobs: int, conc: int
        ) -> Phase:
            app, rds, pid = bench.apps[name]
            return lambda r, part, parts: bench.measure(
                setup,
                workload,
                r,
                conc,
                counter_url,
                {"worker": pid, "redis": redis_pid},
                lambda: run_jobs(
                    app, rds, task, chat_bodies(share(jobs, part, parts), tokens, f"{name}{r}")
                ),
            )

        setups.append(("a", big, best_a, a_phase(big, mt, n)))
        setups.append(
            (
                "b",
                big,
                in_flight_b,
                queued_phase("b pipeline", "b", "kcw.chat", big, mt, n, in_flight_b),
            )
        )
        if bench.llm_like:
            nproc = os.cpu_count() or 1
            bench.worker("c", 1, "worker", "-P", "prefork", "-c", str(nproc))
            setups.append(
                (
                    "c",
                    big,
                    nproc,
                    queued_phase(
                        "c naive", "c", "kcw.chat", big, mt, max(MIN_JOBS, waves * nproc), nproc
                    ),
                )
            )
            api = start_api(tmp, {**bench.env, "REDIS_DB": "0", "KCW_API_KEY": ""}, "api")
            stack.callback(api.stop)

            def e_phase(r: int, part: int, parts: int) -> PhaseResult:
                bodies = chat_bodies(share(args.batch_lines, part, parts), mt, f"e{r}")
                created: list[float] = []
                figures: JSON = {}

                def action() -> list[Completion]:
                    at, completions, more = batch_api.run_batch(api.url, "", bodies)
                    created.append(at)
                    figures.update(more)
                    return completions

                phase = bench.measure(
                    "e batch api",
                    big,
                    r,
                    in_flight_b,
                    counter_url,
                    {"worker": pid_b, "redis": redis_pid, "api": api.proc.pid},
                    action,
                )
                phase.extra.update(figures)
                return phase

            setups.append(("e", big, in_flight_b, e_phase))
            if args.backend == "llamacpp":
                plain = start_plain_llama_server(tmp)
                stack.callback(plain.stop)
                plain_slots = slots(plain.url)
                best_d, result["sweep_d"] = bench.sweep(
                    plain.url, levels_for("llamacpp", plain_slots), mt, args.sweep_waves
                )
                result["plain_slots"] = plain_slots
                setups.append(
                    (
                        "d",
                        big,
                        best_d,
                        lambda r, part, parts: bench.measure(
                            "d plain",
                            big,
                            r,
                            best_d,
                            plain.url,
                            {},
                            lambda: direct(
                                plain.url,
                                chat_bodies(
                                    share(max(MIN_JOBS, waves * best_d), part, parts), mt, f"d{r}"
                                ),
                                best_d,
                            ),
                            server_width=plain_slots,
                        ),
                    )
                )
        one_jobs = max(args.short_jobs, waves * best_a)
        setups.append(("a1", "1", best_a, a_phase("1", 1, one_jobs)))
        setups.append(
            (
                "b1",
                "1",
                in_flight_b,
                queued_phase("b pipeline", "b", "kcw.chat", "1", 1, one_jobs, in_flight_b),
            )
        )
        if not bench.llm_like:
            bench.worker("noop", 2, "bench.noop_tasks")
            setups.append(
                (
                    "noop",
                    "1",
                    in_flight_b,
                    queued_phase(
                        "noop celery", "noop", "bench.noop", "1", 1, one_jobs, in_flight_b
                    ),
                )
            )
            # What the metrics cost: the same pipeline with WORKER_METRICS_PORT=0.
            bench.worker("boff", 3, WORKER_METRICS_PORT="0")
            setups.append(
                (
                    "boff",
                    "1",
                    in_flight_b,
                    queued_phase(
                        "b metrics off", "boff", "kcw.chat", "1", 1, one_jobs, in_flight_b
                    ),
                )
            )

        by_key = {key: run for key, _workload, _conc, run in setups}
        for r in range(repeats):
            bench.run_repeat(by_key, r, args.passes)

        result["pool_threads_b"] = threads_b
        result["in_flight_b"] = in_flight_b
        result["phases"] = [p.summary() for p in bench.phases]
        result["setups"] = setup_rows(bench.phases)
        result["ratios"] = ratio_rows(bench.phases, repeats)
        result["queue_latency"] = latency_pairs(bench, args.pairs)
        if args.backend == "llamacpp":
            result["engine_limit"] = engine_limit(bench, prompt_tokens_of(llm_url), mt)
        if bench.llm_like and args.interactive_lines:
            result["interactive"] = interactive(bench, tmp, stack, args)
        if not bench.llm_like:
            result["scale_out"] = scale_out(bench, tmp, args)
    return result


def interactive(bench: Bench, tmp: Path, stack: ExitStack, args: argparse.Namespace) -> JSON:
    """A `kcw.chat` job's latency while a big batch runs, beside the batch's own requests."""
    proxy_url, proxy = start_timing_proxy(tmp, bench.llm.url)
    stack.callback(stop, proxy)
    db = 3
    env = {**bench.env, "LLM_SERVER_URL": proxy_url, "REDIS_DB": str(db)}
    app = client_app(bench.redis, db)
    stack.callback(app.close)
    stack.enter_context(celery_worker(tmp, env, app, "i", "worker"))
    api = start_api(tmp, {**env, "KCW_API_KEY": ""}, "api-probe")
    stack.callback(api.stop)
    window = pool_size(app, "i") + 2
    figures = batch_api.interactive_probe(
        api.url,
        "",
        proxy_url,
        app,
        chat_bodies(args.interactive_lines, args.max_tokens, "batch-probe"),
        chat_bodies(args.probes, args.max_tokens, "probe"),
        warm_lines=2 * window,
    )
    print(f"  interactive during a {args.interactive_lines}-line batch: {figures}", flush=True)
    return figures


def scale_out(bench: Bench, tmp: Path, args: argparse.Namespace) -> JSON:
    """Jobs/s against the instant server with 1, 2 and 4 worker processes."""
    out: JSON = {}
    for count in (1, 2, 4):
        db = 4 + count
        app = client_app(bench.redis, db)
        rds = bench.redis.client(db=db)
        env = {**bench.env, "REDIS_DB": str(db)}
        with ExitStack() as workers:
            pids = [
                workers.enter_context(celery_worker(tmp, env, app, f"s{count}x{i}", "worker")).pid
                for i in range(count)
            ]
            rates = []
            for r in range(args.repeats):
                before = {pid: cpu_seconds(pid) for pid in pids}
                begin = time.time()
                jobs = run_jobs(
                    app, rds, "kcw.chat", chat_bodies(args.short_jobs, 1, f"s{count}{r}")
                )
                phase = PhaseResult(f"{count} workers", "1", r, count, begin, jobs)
                rates.append(phase.jobs_per_s)
                cpu = sum(cpu_seconds(pid) - before[pid] for pid in pids)
            out[str(count)] = {
                "jobs_per_s": interval(rates).as_dict(),
                "worker_cpu_ms_per_job_last": round(1000 * cpu / args.short_jobs, 3),
            }
            print(f"  {count} worker processes: {out[str(count)]}", flush=True)
        app.close()
    return out


def write_results(path: Path, backend: str, info: JSON, figures: JSON, day: str) -> None:
    """Add this backend's figures to the machine's results file (named for `day`)."""
    data: JSON = json.loads(path.read_text()) if path.exists() else {}
    data["machine"] = info
    data.setdefault("date", day)  # the day the file's first backend ran
    data.setdefault("backends", {})[backend] = figures
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _day(text: str) -> str:
    """`--day`: a date written YYYY-MM-DD."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-12-07") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kc-worker benchmark")
    parser.add_argument("--backend", choices=["llamacpp", "vllm", "instant"], default="llamacpp")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (5)")
    parser.add_argument(
        "--waves", type=int, default=20, help="jobs per phase = waves x concurrency"
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=PASSES,
        help=f"turns of compared setups on each side of the last ({PASSES}: a b a b e b a b a)",
    )
    parser.add_argument("--sweep-waves", type=int, default=4, help="waves per sweep level (4)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-lines", type=int, default=512, help="lines of the (e) batch")
    parser.add_argument("--short-jobs", type=int, default=400, help="jobs of the 1-token phases")
    parser.add_argument("--pairs", type=int, default=200, help="latency pairs, idle and loaded")
    parser.add_argument("--interactive-lines", type=int, default=2000)
    parser.add_argument("--probes", type=int, default=10, help="interactive jobs during the batch")
    parser.add_argument("--smoke", action="store_true", help="tiny counts: check the bench runs")
    parser.add_argument(
        "--out", default=None, help="results file (bench/results/<machine>-<date>.json)"
    )
    parser.add_argument(
        "--day",
        type=_day,
        default=None,
        help="the date in the results file's name (today); `make bench` gives every backend "
        "the day it started, so a run that passes midnight writes one file",
    )
    args = parser.parse_args(argv)
    for flag in ("repeats", "waves", "passes", "sweep_waves", "max_tokens", "batch_lines"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be 1 or more, got {getattr(args, flag)}")
    if args.smoke:
        args.repeats, args.waves, args.sweep_waves = 2, 2, 1
        args.batch_lines, args.short_jobs, args.pairs = 16, 40, 10
        args.interactive_lines, args.probes = 40, 2
    info = machine()
    day = args.day or date.today().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"{machine_slug(info)}-{day}.json"
    tmp = Path(tempfile.mkdtemp(prefix="kcw-bench-"))
    print(f"backend={args.backend} repeats={args.repeats} logs in {tmp}", flush=True)
    started = time.time()
    try:
        figures = run_backend(args, tmp)
    except NotRunnableHere as exc:
        print(f"{args.backend} skipped: {exc}", flush=True)
        write_results(out, args.backend, info, {"skipped": str(exc)}, day)
        return 0
    figures["duration_s"] = round(time.time() - started, 1)
    figures["commit"] = info["commit"]  # each backend's own; `machine` has the last run's
    write_results(out, args.backend, info, figures, day)
    print(json.dumps(figures["ratios"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
