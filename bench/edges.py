"""Where a steady-state window's edges fall: (a) direct and (e) a batch, read two ways.

    .venv/bin/python -m bench.edges --backend vllm [--repeats 2] [--batch-lines 512]

Runs (a) direct load at `--concurrency` (by default the slots of llama-server, 64 on vLLM,
where the bench's sweep finds each server's best) and (e) one Batch API batch through a
worker and `kcw serve`, `--repeats` times, and prints each phase's rate from the jobs'
`usage` and from the server's counter, with edges at a fixed 10% and 90% and at whole
waves (what the bench uses), beside the whole phase's rate. A server that runs its requests
in lockstep finishes them in waves; this shows what the edges do to such a phase.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import batch_api
from bench.counters import CounterSampler
from bench.direct import direct
from bench.phase import PhaseResult
from bench.queued import pool_size
from bench.run import Bench, levels_for, slots
from bench.stats import steady_rate
from bench.workload import chat_bodies
from worker.ops.api_server import start_api

__all__ = ["main", "readings"]


def readings(phase: PhaseResult) -> dict[str, float | None]:
    """The phase's rates: whole, and steady with fixed and with whole-wave edges."""
    points = phase.cumulative("tokens")
    end, total = points[-1]

    def fixed(samples: list[tuple[float, float]]) -> float | None:
        return round(steady_rate(samples), 1) if len(samples) > 2 else None

    return {
        "whole_tok_per_s": round(total / (end - phase.started), 1),
        "usage_fixed_10_90": fixed(points),
        "usage_whole_waves": round(phase.tok_per_s, 1),
        "counter_fixed_10_90": fixed(phase.counter),
        "counter_whole_waves": (
            round(phase.server_tok_per_s, 1) if phase.server_tok_per_s is not None else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="steady-state edges on (a) and (e)")
    parser.add_argument("--backend", choices=["llamacpp", "vllm"], default="vllm")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--waves", type=int, default=10, help="(a) jobs = waves x concurrency")
    parser.add_argument("--batch-lines", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="of (a); the slots, or 64 on vLLM (the sweep's best there)",
    )
    args = parser.parse_args(argv)
    if min(args.repeats, args.waves, args.batch_lines, args.max_tokens) < 1:
        parser.error("--repeats, --waves, --batch-lines and --max-tokens must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="kcw-bench-edges-"))
    with ExitStack() as stack:
        bench = Bench(argparse.Namespace(backend=args.backend), tmp, stack)
        url = bench.llm.url
        slot_count = slots(url)
        width = args.concurrency or slot_count or max(levels_for(args.backend, None))
        bench.worker("b", 0)
        threads = pool_size(bench.apps["b"][0], "b")
        api = start_api(tmp, {**bench.env, "REDIS_DB": "0", "KCW_API_KEY": ""}, "api")
        stack.callback(api.stop)
        print(f"{args.backend}: direct at {width}, worker pool {threads}; logs in {tmp}")
        for r in range(args.repeats):
            for setup in ("a direct", "e batch api"):
                with CounterSampler(url) as sampler:
                    begin = time.time()
                    if setup == "a direct":
                        bodies = chat_bodies(args.waves * width, args.max_tokens, f"ea{r}")
                        done = direct(url, bodies, width)
                        conc = width
                    else:
                        bodies = chat_bodies(args.batch_lines, args.max_tokens, f"ee{r}")
                        done = batch_api.run_batch(api.url, "", bodies)[1]
                        conc = threads
                phase = PhaseResult(
                    setup,
                    str(args.max_tokens),
                    r,
                    conc,
                    begin,
                    done,
                    counter=sampler.samples,
                    server_width=slot_count,
                )
                print(f"  r{r} {setup:<12} {len(done)} jobs at {conc}: {readings(phase)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
