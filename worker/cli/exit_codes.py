"""The exit codes of `kcw`, by name."""

from __future__ import annotations

__all__ = ["FAILED", "INTERRUPTED", "OK", "TIMED_OUT", "USAGE"]

OK = 0
# A check failed, a job failed, or the stack could not start.
FAILED = 1
# The command line or the settings are wrong; the message says what to change.
USAGE = 2
# A wait ran out of time; the job may still finish (`kcw result <id>`).
TIMED_OUT = 3
# Stopped by Ctrl-C.
INTERRUPTED = 130
