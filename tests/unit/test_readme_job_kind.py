"""The README's "Adding a job kind" example, run as written: one module plus one task line."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from worker.cli.parser import parse_args
from worker.cli.payloads import build_payload
from worker.jobs import registry
from worker.jobs.kind import JobContext

ROOT = Path(__file__).resolve().parents[2]
SECTION = ROOT.joinpath("README.md").read_text().split("### Adding a job kind", 1)[1]


@pytest.fixture()
def shout_module(tmp_path: Path) -> Iterator[ModuleType]:
    """The README's module, loaded as a new file under worker.jobs would be."""
    (code,) = re.findall(r"```py\n(.*?)```", SECTION.split("\n## ", 1)[0], flags=re.S)
    path = tmp_path / "shout.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("worker.jobs.shout", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    registry.unregister("shout")
    sys.modules.pop(spec.name, None)


def test_the_new_kind_is_in_kcw_submit_and_builds_its_payload(shout_module: ModuleType) -> None:
    assert "shout" in registry.names()
    args = parse_args(["submit", "shout", "hello", "there"])

    assert build_payload(args) == {"text": "hello there"}


def test_the_new_kind_runs_on_its_validated_input(shout_module: ModuleType) -> None:
    kind = registry.get("shout")
    ctx = JobContext(client=None, settings=None)  # type: ignore[arg-type]

    assert kind.run(ctx, kind.parse({"text": "quiet"})) == {"text": "QUIET"}


def test_its_task_line_registers_the_celery_task(shout_module: ModuleType) -> None:
    line = re.search(r"`(shout = job_task\(\"shout\"\))`", SECTION)
    assert line is not None
    from tasks import jobs as task_lines

    namespace: dict[str, object] = {"job_task": task_lines.job_task}
    exec(line.group(1), namespace)
    try:
        assert "kcw.shout" in task_lines.app.tasks
        assert task_lines.app.tasks["kcw.shout"].name == "kcw.shout"
    finally:
        task_lines.app.tasks.pop("kcw.shout", None)
