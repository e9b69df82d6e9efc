"""Render the README's Performance tables from the committed bench results files.

    python -m bench.report [--file bench/results/X.json] [--write]

`make bench` writes `bench/results/<machine>-<date>.json`; `--write` replaces the text
between the README's `bench-table` markers with tables made, for each backend, from the
newest file that measured it (each column says which file, day, machine and commit), and a
unit test checks that the README still matches them, so no figure is typed in. `--file`
renders one file alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "bench/results"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
JSON = dict[str, Any]
NAMES = {"llamacpp": "llama-server", "vllm": "vLLM-cpu", "instant": "instant stub"}
LLM = ("llamacpp", "vllm")
ORDER = ("instant", *LLM)  # the order `make bench` runs them in
DASH, TIMES = "\u2013", "\u00d7"

__all__ = ["compose", "newest", "render", "results_files", "splice"]


def _by_date(path: Path) -> tuple[str, str]:
    """Sort key of a results file: the date that ends its name, then the name."""
    return path.stem[-10:], path.name


def newest(directory: Path = RESULTS, pattern: str = "*.json", make: str = "make bench") -> Path:
    """The results file with the latest date (the end of its name) among `pattern`."""
    files = sorted(directory.glob(pattern), key=_by_date)
    if not files:
        raise FileNotFoundError(f"no results in {directory}: run `{make}`")
    return files[-1]


def results_files(directory: Path = RESULTS) -> list[Path]:
    """Every results file of `make bench` (one per machine and day)."""
    return sorted(directory.glob("*.json"))


def _iv(item: JSON | None, digits: int = 1) -> str:
    """`median (low to high)` of an interval dict, or a dash."""
    if not item:
        return DASH
    f = f"{{:.{digits}f}}"
    return f"{f.format(item['median'])} ({f.format(item['low'])}{DASH}{f.format(item['high'])})"


def _ratio(item: JSON | None) -> str:
    if not item:
        return DASH
    verdict = "indistinguishable from 1" if item["vs_1"] == "indistinguishable" else ""
    text = f"{item['median']:.3f} [{item['low']:.3f}, {item['high']:.3f}]"
    return f"{text} {verdict}".strip()


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows), ""]


def _setup(backend: JSON, name: str) -> JSON | None:
    found: JSON | None = backend["setups"].get(name)
    return found


def _limit_fraction(backend: JSON, setup: JSON | None) -> str:
    """A llama.cpp row as a fraction of llama-batched-bench's decode rate at its width."""
    limit = backend.get("engine_limit") or {}
    table = limit.get("decode_tok_per_s") or {}
    if not setup or not table or "tok_per_s" not in setup:
        return DASH
    # A server with N slots decodes at most N sequences at once, however many are in flight.
    slots = backend.get("slots") or min(int(k) for k in backend["sweep_a"]["levels"])
    width = min(int(setup["concurrency"]), int(slots))
    levels = sorted(int(k) for k in table)
    level = max([x for x in levels if x <= width] or levels[:1])
    rate = setup["tok_per_s"]["median"] / table[str(level)]
    return f"{rate:.2f} (of {table[str(level)]:.0f} at {level})"


SETUPS = [
    ("a direct [64]", "(a) direct, best concurrency"),
    ("b pipeline [64]", "(b) our pipeline, `kcw.chat` jobs"),
    ("e batch api [64]", "(e) Batch API, one {lines}-line batch"),
    ("c naive [64]", "(c) naive Celery, prefork {TIMES} cores"),
    ("d plain [64]", "(d) plain `llama-server`, best concurrency"),
]


def throughput(data: JSON) -> list[str]:
    backends = {k: v for k, v in data["backends"].items() if k in LLM}
    head = ["64 tokens a job, tok/s: median (95% interval)"]
    for key in backends:
        head.append(f"{NAMES[key]}")
        if key == "llamacpp":
            head.append("of the engine's limit")
    rows = []
    for name, label in SETUPS:
        lines = next(iter(backends.values()))["settings"]["batch_lines"] if backends else 0
        cells = [label.format(lines=lines, TIMES=TIMES)]
        for key, backend in backends.items():
            setup = _setup(backend, name)
            conc = f" [{setup['concurrency']}]" if setup else ""
            cells.append(_iv(setup.get("tok_per_s") if setup else None) + conc)
            if key == "llamacpp":
                cells.append(_limit_fraction(backend, setup))
        rows.append(cells)
    return _table(head, rows)


RATIOS: list[tuple[str, str, Callable[[str], str]]] = [
    ("b/a", "(b)/(a), 64 tokens", lambda k: "≥ 0.97, low end ≥ 0.95"),
    ("b/a server counter", "(b)/(a), the server's own token counter", lambda k: "the same"),
    ("b/a 1-token jobs", "(b)/(a), 1 token, jobs/s", lambda k: "≥ 0.90"),
    ("e/a", "(e)/(a), Batch API", lambda k: "≥ 0.95"),
    ("e/a server counter", "(e)/(a), the server's own token counter", lambda k: "the same"),
    ("b/c", "(b)/(c), against naive Celery", lambda k: "≥ 2.5" if k == "vllm" else "> 1"),
    ("b/d", "(b)/(d), against plain llama-server", lambda k: "≥ 1"),
]


def _turns(backend: JSON) -> str:
    """The parts a backend's compared setups ran in, as its phases record them."""
    parts = max((int(p.get("parts", 1)) for p in backend.get("phases", [])), default=1)
    return {1: "whole phases", 2: "halves"}.get(parts, f"{parts} parts")


def ratios(data: JSON) -> list[str]:
    backends = {k: v for k, v in data["backends"].items() if k in LLM}
    head = ["ratio of steady-state rates: median [95% interval]"]
    head += [
        f"{NAMES[k]} ({v['settings']['repeats']} repeats, {v['settings']['waves']} waves,"
        f" {_turns(v)})"
        for k, v in backends.items()
    ]
    head.append("target")
    rows = []
    for key, label, target in RATIOS:
        if not any(key in b["ratios"] for b in backends.values()):
            continue
        cells = [label] + [_ratio(b["ratios"].get(key)) for b in backends.values()]
        rows.append([*cells, " / ".join(dict.fromkeys(target(k) for k in backends))])
    return _table(head, rows)


def cpu(data: JSON) -> list[str]:
    head = ["CPU ms per job (median)", "workers", "Redis", "`kcw serve`"]
    rows = []
    for key, backend in data["backends"].items():
        for name, setup in backend["setups"].items():
            use = setup.get("cpu_ms_per_job") or {}
            if "worker" not in use:
                continue
            rows.append(
                [
                    f"{NAMES[key]}: {name}",
                    f"{use['worker']:.2f}",
                    f"{use.get('redis', 0):.2f}",
                    f"{use['api']:.2f}" if "api" in use else DASH,
                ]
            )
    return _table(head, rows)


# Said under the latency table of a run that paired a job and a direct request with
# different prompts (results files older than the `same_prompts` field).
UNEQUAL_PROMPTS = (
    "\\* Measured before the two arms of a pair sent the same prompt: direct HTTP got the "
    "longer half of the prompts, so on an LLM server the overhead reads low by the time "
    "those extra prompt tokens take."
)


def latency(data: JSON) -> list[str]:
    head = [
        "queue latency, client side, 1-token jobs",
        "pairs",
        "pipeline p50",
        "direct p50",
        "overhead p50",
        "overhead p95",
    ]
    rows = []
    unequal = False
    for key, backend in data["backends"].items():
        for label, row in (backend.get("queue_latency") or {}).items():
            mark = "" if row.get("same_prompts") else " *"
            unequal = unequal or bool(mark)
            rows.append(
                [
                    f"{NAMES[key]}, {label}{mark}",
                    str(row["pairs"]),
                    f"{row['pipeline_p50_ms']:.2f} ms",
                    f"{row['direct_p50_ms']:.2f} ms",
                    f"{row['overhead_p50_ms']:.2f} ms",
                    f"{row['overhead_p95_ms']:.2f} ms",
                ]
            )
    table = _table(head, rows)
    if unequal:
        table.insert(-1, "")
        table.insert(-1, UNEQUAL_PROMPTS)
    return table


def interactive(data: JSON) -> list[str]:
    head = [
        "a `kcw.chat` job during a big batch",
        "batch lines",
        "its latency (median of probes)",
        "batch requests' median then",
        "ratio, median / worst",
        "backlog left",
    ]
    rows = []
    for key, backend in data["backends"].items():
        probe = backend.get("interactive")
        if not probe:
            continue
        latencies = sorted(p["latency_s"] for p in probe["probes"])
        batch = sorted(p["batch_median_s"] for p in probe["probes"])
        rows.append(
            [
                f"{NAMES[key]} ({len(latencies)} jobs, one at a time)",
                str(probe["batch_lines"]),
                f"{latencies[len(latencies) // 2]:.2f} s",
                f"{batch[len(batch) // 2]:.2f} s",
                f"{probe['ratio_median']:.2f} / {probe['ratio_max']:.2f}",
                f"{probe['batch_backlog_at_end']} lines",
            ]
        )
    return _table(head, rows)


def engine(data: JSON) -> list[str]:
    backend = data["backends"].get("llamacpp") or {}
    limit = backend.get("engine_limit") or {}
    table = limit.get("decode_tok_per_s")
    if not table:
        return []
    head = ["`llama-batched-bench`, parallel sequences", *table]
    prompt, gen = limit["prompt_tokens"], limit["gen_tokens"]
    rows = [
        [f"decode tok/s ({prompt}-token prompts, {gen} tokens)"]
        + [f"{v:.0f}" for v in table.values()]
    ]
    whole = limit.get("generated_over_total_tok_per_s")
    if whole:
        rows.append(
            ["generated tok/s over prefill + decode", *(f"{v:.0f}" for v in whole.values())]
        )
    return _table(head, rows)


def scale(data: JSON) -> list[str]:
    backend = data["backends"].get("instant") or {}
    out = backend.get("scale_out")
    if not out:
        return []
    head = ["instant stub server, 1-token jobs", "jobs/s: median (95% interval)"]
    rows = [
        [f"{count} worker process{'es' if count != '1' else ''}", _iv(row["jobs_per_s"], 0)]
        for count, row in out.items()
    ]
    for name, label in (
        ("a direct [1]", "direct HTTP, best concurrency"),
        ("b pipeline [1]", "(b) our pipeline, 1 worker process, in the interleaved repeats"),
        ("noop celery [1]", "a no-op Celery task, same configuration"),
    ):
        setup = backend["setups"].get(name)
        if setup:
            rows.append([label, _iv(setup.get("jobs_per_s"), 0)])
    return _table(head, rows)


def metrics_cost(data: JSON) -> list[str]:
    """The pipeline with its Prometheus metrics on (the default) and off, on the instant stub."""
    backend = data["backends"].get("instant") or {}
    on, off = (
        (backend.get("setups") or {}).get("b pipeline [1]"),
        (backend.get("setups") or {}).get("b metrics off [1]"),
    )
    if not on or not off:
        return []
    head = ["instant stub server, 1-token jobs", "metrics on", "metrics off", "on/off"]
    ratio = backend["ratios"]
    rows = [
        [
            "worker CPU ms per job (median)",
            f"{on['cpu_ms_per_job']['worker']:.2f}",
            f"{off['cpu_ms_per_job']['worker']:.2f}",
            _ratio(ratio.get("metrics on/off worker cpu")),
        ],
        [
            "jobs/s: median (95% interval)",
            _iv(on.get("jobs_per_s"), 0),
            _iv(off.get("jobs_per_s"), 0),
            _ratio(ratio.get("metrics on/off jobs")),
        ],
    ]
    for label, row in (backend.get("queue_latency") or {}).items():
        if "metrics_off_overhead_p50_ms" in row:
            rows.append(
                [
                    f"queue overhead p50, {label}",
                    f"{row['overhead_p50_ms']:.2f} ms",
                    f"{row['metrics_off_overhead_p50_ms']:.2f} ms",
                    f"{row['overhead_p50_ms'] / row['metrics_off_overhead_p50_ms']:.3f}",
                ]
            )
    return _table(head, rows)


def compose(paths: list[Path]) -> JSON:
    """One results set from several files: each backend from the newest file that measured it.

    A run that measured only some backends (or one cut short) does not blank the others in
    the README: they keep their last measured figures, and each backend's source, date and
    machine are kept beside them so the tables say where every column comes from.
    """
    composed: JSON = {"backends": {}, "sources": {}, "skipped": {}}
    for path in sorted(paths, key=_by_date, reverse=True):
        shown = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        _add(composed, json.loads(path.read_text()), shown)
    if not composed["backends"] and not composed["skipped"]:
        raise FileNotFoundError("no backend was measured in " + ", ".join(map(str, paths)))
    order = {key: i for i, key in enumerate(ORDER)}
    composed["backends"] = dict(
        sorted(composed["backends"].items(), key=lambda kv: order.get(kv[0], 99))
    )
    return composed


def _add(composed: JSON, data: JSON, shown: str) -> None:
    """Add one results file's backends (named `shown`) that `composed` does not hold yet."""
    for key, figures in data["backends"].items():
        if key in composed["backends"]:
            continue
        if "skipped" in figures:
            composed["skipped"].setdefault(key, {"why": figures["skipped"], "file": shown})
            continue
        composed["backends"][key] = figures
        composed["sources"][key] = {"file": shown, "date": data["date"], "machine": data["machine"]}


def _cpu(info: JSON) -> str:
    """The CPU as a results file records it: model name, family and model numbers, cores."""
    ids = ""
    if info.get("cpu_family") is not None:
        ids = f"family {info['cpu_family']}, model {info.get('cpu_model_number')}"
        ids += ", AVX-512" if info.get("avx512") else ", no AVX-512"
        ids += "; "
    return f"{info['cpu']} ({ids}{info['cores']} cores)"


def _measured_line(data: JSON, keys: list[str], named: bool) -> str:
    """Where the figures of `keys` (one results file) were measured: machine, day, commits."""
    source = data["sources"][keys[0]]
    info = source["machine"]
    commits = {k: data["backends"][k].get("commit") for k in keys}
    if all(commits.values()):
        distinct = set(commits.values())
        if len(distinct) == 1:
            where = f"commit {distinct.pop()}"
        else:
            where = "commits " + ", ".join(f"{c} ({NAMES[k]})" for k, c in commits.items())
    else:
        where = f"commit {info['commit']}"
    measured = "measured" if named else "Measured"
    line = (
        f"{measured} with `make bench` on {_cpu(info)}, {source['date']}, {where}; "
        f"from `{source['file']}`."
    )
    return " and ".join(NAMES[k] for k in keys) + ": " + line if named else line


def render(data: JSON, source: str = "") -> str:
    """Every table, in README order, with the file (or files) they come from.

    `data` is one results file (named by `source`) or a set made by `compose`.
    """
    if "sources" not in data:
        single: JSON = {"backends": {}, "sources": {}, "skipped": {}}
        _add(single, data, source)
        data = single
    groups: dict[str, list[str]] = {}
    for key in data["backends"]:
        groups.setdefault(data["sources"][key]["file"], []).append(key)
    lines = [_measured_line(data, keys, len(groups) > 1) for keys in groups.values()]
    lines.append("")
    for key, skip in data["skipped"].items():
        elsewhere = data["sources"].get(key)
        if elsewhere:
            lines.append(
                f"{NAMES[key]} was not measured in `{skip['file']}`: {skip['why']}; "
                f"its figures are from `{elsewhere['file']}`.\n"
            )
        else:
            lines.append(f"{NAMES[key]} was not measured: {skip['why']}\n")
    for part in (throughput, ratios, engine, cpu, latency, interactive, scale, metrics_cost):
        lines += part(data)
    return "\n".join(lines).rstrip() + "\n"


def splice(readme: str, tables: str, start: str = START, end: str = END) -> str:
    """`readme` with the text between the markers `start` and `end` replaced by `tables`."""
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {start} … {end} markers")
    return pattern.sub(lambda _: f"{start}\n{tables}{end}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="rewrite README.md")
    args = parser.parse_args(argv)
    if args.file is not None:
        path = args.file.resolve()
        if not path.is_file():
            parser.error(f"--file {path}: no such results file (bench/results/ holds them)")
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        tables = render(json.loads(path.read_text()), shown.as_posix())
        used = str(path)
    else:
        newest()  # says which command makes results when there are none
        data = compose(results_files())
        tables = render(data)
        used = ", ".join(sorted({s["file"] for s in data["sources"].values()}))
    if args.write:
        README.write_text(splice(README.read_text(), tables))
        print(f"README.md tables rewritten from {used}")
    else:
        sys.stdout.write(tables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
