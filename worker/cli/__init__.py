"""`kcw`: check the stack, submit jobs, read results, run the demo and the Batch API."""

from __future__ import annotations

import sys

from worker.cli import exit_codes
from worker.cli.commands import COMMANDS
from worker.cli.parser import parse_args
from worker.config import get_settings
from worker.errors import (
    ApiError,
    JobWaitTimedOut,
    ModelPullError,
    QueueFull,
    SettingsError,
    StackError,
    UsageError,
)

__all__ = ["main"]

# Errors `kcw` reports in one line (`kcw: <message>`), and the exit code of each.
REPORTED = (
    (SettingsError, exit_codes.USAGE),
    (UsageError, exit_codes.USAGE),
    (JobWaitTimedOut, exit_codes.TIMED_OUT),
    (StackError, exit_codes.FAILED),
    (ModelPullError, exit_codes.FAILED),
    (QueueFull, exit_codes.FAILED),
    (ApiError, exit_codes.FAILED),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        return COMMANDS[args.command](args, get_settings(), out, err)
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
    except Exception as exc:
        for error_class, code in REPORTED:
            if isinstance(exc, error_class):
                err.write(f"kcw: {exc}\n")
                return code
        raise
