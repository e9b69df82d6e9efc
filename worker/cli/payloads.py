"""`kcw submit`'s payload: raw JSON from `--payload`, or built by the job kind from the flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.errors import UsageError
from worker.jobs import registry
from worker.jobs.kind import CliInput

__all__ = ["build_payload", "read_text"]


def read_text(value: str) -> str:
    """A literal, `@path` for a file's contents, or `-` for standard input."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    return value


def _raw_payload(value: str) -> dict[str, Any]:
    try:
        payload = json.loads(read_text(value))
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        # Integers over Python's 4,300-digit limit, or arrays nested past the recursion limit.
        raise UsageError(f"--payload cannot be read as JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object")
    return payload


def build_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The job payload from the command line; `--payload` sends raw JSON as it is."""
    if args.payload is not None:
        return _raw_payload(args.payload)
    kind = registry.get(args.kind)
    text = read_text(" ".join(args.text)) if args.text else None
    if not text:
        raise UsageError(
            f"give the {kind.name} input as text, @file or - (stdin), or use --payload"
        )
    cli = CliInput(
        text=text,
        words=tuple(args.text),
        system=args.system,
        schema=read_text(args.schema) if args.schema else None,
        labels=args.labels,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
    )
    return kind.cli_payload(cli)
