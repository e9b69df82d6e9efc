"""Render the README's fault tables from a fault-tier report, so no figure is typed in.

`make test-faults` writes `.run/fault-report.json`. `make fault-table` copies it to
`tests/faults/readme-report.json` and rewrites the tables between the README's
`fault-table` markers from it; a unit test checks that the README still matches that copy.

    python scripts/fault_table.py [--report PATH] [--write]   # print, or write the README
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KEPT_REPORT = ROOT / "tests/faults/readme-report.json"
RUN_REPORT = ROOT / ".run/fault-report.json"
MARKERS = {
    "faults": ("<!-- fault-table:start -->", "<!-- fault-table:end -->"),
    "fetch": ("<!-- fetch-table:start -->", "<!-- fetch-table:end -->"),
}
COLUMNS = (
    "submitted",
    "completed",
    "failed_clearly",
    "lost",
    "duplicated",
    "executed_more_than_once",
    "llm_requests",
)
HEAD = (
    "| fault | what happens | submitted | completed | failed clearly | lost "
    "| duplicated results | executed more than once | LLM requests |"
)
Row = dict[str, Any]
Said = Callable[[Row], str]


def _extra(row: Row, key: str) -> Any:
    return row["extra"][key]


def _load(row: Row) -> str:
    jobs_per_s = row["note"].split()[0]
    return (
        f"all complete at {jobs_per_s} jobs/s; worker RSS {_extra(row, 'worker_rss_start_mib')} "
        f"→ {_extra(row, 'worker_rss_end_mib')} MiB; Redis grows about "
        f"{_extra(row, 'redis_bytes_per_job')} bytes a job until results expire"
    )


def _generated(row: Row) -> str:
    other = _extra(row, "in-process cases") + _extra(row, "cli cases")
    return (
        f"{row['submitted']} bad jobs through the worker, each failing with a clear error "
        "(`InvalidJobInput`, `ContextLengthExceeded`, `NotRegistered`); "
        f"{other:,} more cases against the input models and `kcw submit`, which exits 2 with a "
        f"message; {row['note'].split(', ', 1)[1]}, and the next good job succeeds"
    )


def _redis_off(row: Row) -> str:
    return (
        f"{_extra(row, 'queued')} queued and {_extra(row, 'finished')} finished jobs are lost "
        f"with the data, exactly those; the {_extra(row, 'delivered')} the worker held finish"
    )


# Scenario name (as the fault tier records it) -> the fault, and what happens in words.
SCENARIOS: dict[str, tuple[str, Said]] = {
    "worker kill -9 x3": (
        "worker `kill -9`, three times mid-run",
        lambda row: (
            "its unacknowledged jobs come back after the visibility timeout and run "
            "on the restarted worker; a job caught mid-request calls the model again"
        ),
    ),
    "worker SIGTERM (warm shutdown)": (
        "worker SIGTERM",
        lambda row: "running jobs finish; jobs it had reserved go back to the queue at once",
    ),
    "Redis restart, AOF on": (
        "Redis restart, AOF on (compose)",
        lambda row: "the worker reconnects by itself; queued, running and finished jobs survive",
    ),
    "Redis restart, AOF off": ("Redis restart, AOF off", _redis_off),
    "Redis kill -9, AOF everysec": (
        "Redis `kill -9`, AOF `everysec` (compose)",
        lambda row: "every write Redis acknowledged was already with the kernel: nothing lost",
    ),
    "LLM server down 30 s": (
        "LLM server down 30 s",
        lambda row: (
            "jobs retry with backoff and finish when it returns; a job whose request "
            "the kill cut off calls the model again on its retry"
        ),
    ),
    "LLM server gone for good": (
        "LLM server gone past the retry budget",
        lambda row: (
            "each job fails with `LLMServerDown`, naming `LLM_SERVER_URL`; none is left queued"
        ),
    ),
    "LLM server slower than LLM_TIMEOUT": (
        "server slower than `LLM_TIMEOUT`",
        lambda row: (
            "the request is abandoned at `LLM_TIMEOUT` and sent again "
            "(more requests, one execution)"
        ),
    ),
    "LLM server never answers": (
        "server never answers",
        lambda row: "the job stops at its time limit with `JobTimedOut`",
    ),
    "load: 5,000 short jobs, one worker": ("5,000 one-token jobs, one worker", _load),
    "generated bad input": ("generated bad input (hypothesis)", _generated),
    "Batch API: worker kill -9 x3, kcw serve kill -9": (
        "Batch API: worker `kill -9` x3 and `kcw serve` `kill -9`, mid-batch",
        lambda row: (
            f"the {_extra(row, 'lines held by the killed workers')} lines the dead workers held "
            "are sent again after `BATCH_LINE_TIMEOUT`; the next `kcw serve` resumes from the "
            f"files ({_extra(row, 'lines done when kcw serve took over')} lines done) and the "
            "batch completes, each line written once"
        ),
    ),
    "Batch API: Redis restart, AOF on": (
        "Batch API: Redis restart mid-batch, AOF on",
        lambda row: (
            "`kcw serve` and the worker reconnect by themselves; the batch completes, "
            "each line written once"
        ),
    ),
    "Batch API: cancel mid-run": (
        "Batch API: cancel mid-batch",
        lambda row: (
            f"of the {_extra(row, 'held at the cancel')} lines the worker held, those running "
            f"finish and are kept; the {_extra(row, 'queued at the cancel')} queued are skipped "
            f"before the model; {_extra(row, 'never started')} never start"
        ),
    ),
}
FETCH = re.compile(r"kill -9 at the fetch x(\d+), (\w+)")
FETCH_NAMES = {"brpop": "stock kombu (`REDIS_FETCH=brpop`)", "atomic": "atomic (default)"}


def _cells(row: Row) -> list[str]:
    return [str(row[column]) for column in COLUMNS]


def missing(rows: list[Row]) -> list[str]:
    """The known scenarios a report has no row for."""
    found = {row["scenario"] for row in rows}
    return [name for name in SCENARIOS if name not in found]


def fault_table(rows: list[Row]) -> str:
    """The Guarantees table: one line per scenario in the report, in the order of `SCENARIOS`."""
    by_name = {row["scenario"]: row for row in rows}
    unknown = [n for n in by_name if n not in SCENARIOS and not FETCH.fullmatch(n)]
    if unknown:
        raise SystemExit(f"no wording for {unknown}: add them to SCENARIOS in {__file__}")
    lines = [HEAD, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, (fault, said) in SCENARIOS.items():
        if name in by_name:
            row = by_name[name]
            lines.append("| " + " | ".join([fault, said(row), *_cells(row)]) + " |")
    return "\n".join(lines)


def fetch_table(rows: list[Row]) -> str:
    """The aimed-kill table: stock kombu, then the atomic fetch."""
    found = {m[2]: (m[1], row) for row in rows if (m := FETCH.fullmatch(row["scenario"]))}
    if set(found) != set(FETCH_NAMES):
        raise SystemExit("the report lacks the aimed kill rows: run test_fetch_window.py")
    head = (
        "| fetch | kills | submitted | completed | lost | duplicated results "
        "| executed more than once |"
    )
    lines = [head, "|" + "---|" * 7]
    for fetch, name in FETCH_NAMES.items():
        kills, row = found[fetch]
        cells = [
            name,
            kills,
            *(str(row[c]) for c in COLUMNS if c not in ("failed_clearly", "llm_requests")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(rows: list[Row]) -> dict[str, str]:
    return {"faults": fault_table(rows), "fetch": fetch_table(rows)}


def blocks(text: str) -> dict[str, str]:
    """The text between each pair of markers in the README."""
    found = {}
    for key, (start, end) in MARKERS.items():
        match = re.search(re.escape(start) + r"\n(?:(.*?)\n)?" + re.escape(end), text, re.S)
        if match is None:
            raise SystemExit(f"README.md has no {start} ... {end} block")
        found[key] = match[1] or ""
    return found


def _constant(value: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: value


def rewrite(text: str, tables: dict[str, str]) -> str:
    for key, (start, end) in MARKERS.items():
        pattern = re.compile(re.escape(start) + r"\n(?:.*?\n)?" + re.escape(end), re.S)
        block = f"{start}\n{tables[key]}\n{end}"
        # A function, so backslashes in the table are not read as group references.
        text = pattern.sub(_constant(block), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=RUN_REPORT, help="a fault-report.json")
    parser.add_argument(
        "--write", action="store_true", help="keep the report and rewrite README.md's tables"
    )
    parser.add_argument(
        "--partial", action="store_true", help="accept a report that lacks some scenarios"
    )
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"no report at {args.report}: run `make test-faults` first", file=sys.stderr)
        return 1
    rows = json.loads(args.report.read_text())
    lacking = missing(rows)
    if lacking and not args.partial:
        print(f"the report lacks {lacking}: run the whole fault tier first", file=sys.stderr)
        return 1
    tables = render(rows)
    if args.write:
        README.write_text(rewrite(README.read_text(), tables))
        if args.report.resolve() != KEPT_REPORT.resolve():
            shutil.copyfile(args.report, KEPT_REPORT)
        print(f"README.md tables rewritten from {args.report}; kept as {KEPT_REPORT}")
    else:
        print(tables["faults"], tables["fetch"], sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
