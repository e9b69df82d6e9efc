"""The fault tier: real redis-server, llama-server and worker processes, broken on purpose.

The session fixtures of `tests/conftest.py` (Redis, llama-server, worker) are shared with
the integration tier; each scenario that breaks something starts its own copy of the part
it breaks.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults import report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    found = report.rows()
    if not found:
        return
    terminalreporter.section("kc-worker fault tier: what happened to the jobs")
    terminalreporter.write_line(report.table(found))
    for row in found:
        if row.extra:
            extras = ", ".join(f"{key} {value}" for key, value in row.extra.items())
            terminalreporter.write_line(f"{row.scenario}: {extras}")
    terminalreporter.write_line(f"written to {report.write(found)}")


@pytest.fixture()
def record() -> Any:
    """`record(Row(...))` adds a scenario's figures to the table printed at the end."""
    return report.add
