"""The README's fault tables are rendered from a kept fault-tier report, never typed in."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_table", ROOT / "scripts/fault_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fault_table = _script()


def _kept() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(fault_table.KEPT_REPORT.read_text())
    return rows


def test_the_readme_tables_are_the_kept_report_rendered() -> None:
    readme = fault_table.README.read_text()
    assert fault_table.blocks(readme) == fault_table.render(_kept()), (
        "README.md's fault tables differ from tests/faults/readme-report.json: "
        "run the fault tier, then `make fault-table`"
    )


def test_every_scenario_has_wording_that_names_a_real_test() -> None:
    recorded = {row["scenario"] for row in _kept()}
    fetch = {name for name in recorded if fault_table.FETCH.fullmatch(name)}
    assert recorded - fetch <= set(fault_table.SCENARIOS)
    # And each scenario name is one the fault tier's tests really record.
    sources = "\n".join(p.read_text() for p in (ROOT / "tests/faults").glob("test_*.py"))
    for name in fault_table.SCENARIOS:
        assert name.split(",")[0] in sources or re.escape(name) in sources, name


def test_a_changed_figure_changes_the_table() -> None:
    rows = copy.deepcopy(_kept())
    before = fault_table.render(rows)
    rows[0]["lost"] += 1
    assert fault_table.render(rows) != before


def test_a_report_without_a_scenario_is_not_written_unless_partial(tmp_path: Path) -> None:
    rows = [row for row in _kept() if row["scenario"] != "worker kill -9 x3"]
    report = tmp_path / "report.json"
    report.write_text(json.dumps(rows))
    assert "worker kill -9 x3" in fault_table.missing(rows)
    assert fault_table.main(["--report", str(report)]) == 1
    assert "worker kill -9 x3" not in fault_table.fault_table(rows)


def test_a_scenario_without_wording_is_refused() -> None:
    rows = [*copy.deepcopy(_kept()), {**_kept()[0], "scenario": "a new fault"}]
    with pytest.raises(SystemExit, match="a new fault"):
        fault_table.render(rows)


def test_rewrite_replaces_only_the_marked_blocks() -> None:
    text = "intro\n<!-- fault-table:start -->\nold\n<!-- fault-table:end -->\nmiddle\n"
    text += "<!-- fetch-table:start -->\nold \\1\n<!-- fetch-table:end -->\nend\n"
    out = fault_table.rewrite(text, {"faults": "A \\1", "fetch": "B"})
    assert out == (
        "intro\n<!-- fault-table:start -->\nA \\1\n<!-- fault-table:end -->\nmiddle\n"
        "<!-- fetch-table:start -->\nB\n<!-- fetch-table:end -->\nend\n"
    )
