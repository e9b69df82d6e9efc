"""The engine's own limit: llama.cpp's `llama-batched-bench` on the model the bench serves.

`make llama-batched-bench` builds it from the same pinned llama.cpp source, with the same
configure flags, as our `llama-server` (scripts/llama-server-env). It decodes N sequences at
once in one process, with no HTTP, no scheduler and no queue, so its decode tokens per second
(S_TG) at N parallel sequences is the most any server on this machine can reach with N slots:
the ceiling the bench's measured throughput is read against.

The flags follow the launcher's llama-server defaults where batched-bench takes them: one KV
stream per sequence (`--no-kv-unified`), llama.cpp's default thread count unless `threads` is
given (the launcher's N_THREADS=0), and llama.cpp's defaults for flash attention and batch
sizes, as the launcher leaves them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER_ENV = ROOT / "scripts/llama-server-env"
# llama.cpp rounds each sequence's KV stream up to this many cells.
KV_PAD = 256


@dataclass(frozen=True)
class LimitRow:
    """One batched-bench measurement: `parallel` sequences of that many prompt and new tokens."""

    parallel: int
    prompt_tokens: int
    gen_tokens: int
    prompt_tok_per_s: float
    gen_tok_per_s: float
    total_s: float


def batched_bench_path() -> Path:
    """The `make llama-batched-bench` binary, so the limit comes from the server's own build."""
    done = subprocess.run(
        [str(LLAMA_SERVER_ENV), "batched-bench-path"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError("llama-batched-bench is not built: run `make llama-batched-bench`")
    return Path(done.stdout.strip())


def _row_from_json(data: dict[str, object]) -> LimitRow | None:
    num: dict[str, float] = {}
    for key in ("pl", "pp", "tg", "speed_pp", "speed_tg", "t"):
        value = data.get(key)
        if not isinstance(value, int | float):
            return None
        num[key] = float(value)
    return LimitRow(
        parallel=int(num["pl"]),
        prompt_tokens=int(num["pp"]),
        gen_tokens=int(num["tg"]),
        prompt_tok_per_s=num["speed_pp"],
        gen_tok_per_s=num["speed_tg"],
        total_s=num["t"],
    )


def _row_from_table(line: str) -> LimitRow | None:
    # | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s |
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    if len(cells) != 10:
        return None
    try:
        pp, tg, pl = int(cells[0]), int(cells[1]), int(cells[2])
        speed_pp, speed_tg, total = float(cells[5]), float(cells[7]), float(cells[8])
    except ValueError:
        return None  # the header or the |---| rule
    return LimitRow(pl, pp, tg, speed_pp, speed_tg, total)


def parse_output(text: str) -> list[LimitRow]:
    """The rows of batched-bench's output (jsonl or its markdown table), for the bench report."""
    rows: list[LimitRow] = []
    for line in text.splitlines():
        stripped = line.strip()
        row: LimitRow | None = None
        if stripped.startswith("{"):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                row = _row_from_json(data)
        elif stripped.startswith("|"):
            row = _row_from_table(stripped)
        if row is not None:
            rows.append(row)
    if not rows:
        tail = text[-2000:] if text.strip() else "(empty)"
        raise ValueError(f"no llama-batched-bench result rows in its output:\n{tail}")
    return rows


def engine_limit(
    model: Path,
    prompt_tokens: int,
    gen_tokens: int,
    parallel: list[int],
    threads: int | None,
    ctx: int | None = None,
    log: Path | None = None,
) -> list[LimitRow]:
    """Tokens per second of llama-batched-bench at each level: the ceiling for that many slots."""
    if not parallel or min(parallel) < 1:
        raise ValueError(f"parallel levels must be 1 or more: {parallel}")
    if ctx is None:
        # One stream per sequence (--no-kv-unified): each needs prompt + generated tokens.
        per_stream = -(-(prompt_tokens + gen_tokens) // KV_PAD) * KV_PAD
        ctx = max(parallel) * per_stream
    argv = [
        str(batched_bench_path()),
        "--model",
        str(model),
        "--ctx-size",
        str(ctx),
        "--no-kv-unified",
        "-npp",
        str(prompt_tokens),
        "-ntg",
        str(gen_tokens),
        "-npl",
        ",".join(str(n) for n in parallel),
        "--output-format",
        "jsonl",
    ]
    if threads:
        argv += ["--threads", str(threads)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if log is not None:
        log.write_text(f"$ {' '.join(argv)}\n{done.stderr}{done.stdout}")
    if done.returncode != 0:
        where = f" (log: {log})" if log is not None else ""
        raise RuntimeError(
            f"llama-batched-bench exited with {done.returncode}{where}:\n{done.stderr[-2000:]}"
        )
    return parse_output(done.stdout)
