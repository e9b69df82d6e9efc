"""No silent loss of coverage: skipped vLLM or Docker tests fail a run that asks for all of them.

On a CPU without AVX2 the vLLM tests skip, and without a Docker engine the Docker tier
would too; CI is then green with that coverage gone. `.ci/run` sets KCW_FAIL_ON_SKIPS=1
(unless KCW_ALLOW_SKIPS=1), and such a run fails, naming what was skipped and why.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["guarded", "report_skips"]

# Tests whose skip means a whole backend, tier or real part (Prometheus) went untested.
GUARDED_MARKS = ("vllm", "tests/docker/", "prometheus")


def guarded(nodeid: str) -> bool:
    return any(mark in nodeid.lower() for mark in GUARDED_MARKS)


def report_skips(session: pytest.Session, skipped: list[pytest.TestReport]) -> None:
    """Print the guarded skips; fail the session when KCW_FAIL_ON_SKIPS=1 asks for all."""
    found = [report for report in skipped if guarded(report.nodeid)]
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    strict = os.environ.get("KCW_FAIL_ON_SKIPS") == "1"
    if reporter is not None:
        reporter.section(
            "skipped vLLM / Docker tests" + (" (KCW_FAIL_ON_SKIPS=1)" if strict else "")
        )
        for report in found:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            reporter.write_line(f"{report.nodeid}: {reason}")
        if strict:
            reporter.write_line(
                "these tests must run in CI; fix what made them skip, or set KCW_ALLOW_SKIPS=1"
            )
    if strict:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
