"""What importing each part costs, and the layout rules of the packages.

Each import is checked in a fresh interpreter, so what this test process already
imported cannot hide a heavy import.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import worker

ROOT = Path(worker.__file__).resolve().parent.parent
SHIPPED = ("worker", "tasks", "bench")
MAX_MODULE_LINES = 400


def modules_loaded_after(code: str, tmp_path: Path) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent(
        """
        import json, sys
        print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # no `.env` here
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return set(loaded)


def python_files(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_settings_import_neither_celery_nor_kombu_nor_openai(tmp_path: Path) -> None:
    loaded = modules_loaded_after("import worker.config", tmp_path)

    assert "worker" in loaded
    assert loaded.isdisjoint({"celery", "kombu", "openai"})


def test_the_submitting_client_does_not_import_openai(tmp_path: Path) -> None:
    loaded = modules_loaded_after("import worker.client", tmp_path)

    assert "openai" not in loaded


def test_listing_the_job_kinds_does_not_import_openai(tmp_path: Path) -> None:
    loaded = modules_loaded_after(
        """
        from worker.jobs import registry
        assert registry.names() == ("chat", "summarize", "extract", "classify", "embed")
        """,
        tmp_path,
    )

    assert "openai" not in loaded


def test_worker_app_is_the_celery_app_that_celery_dash_a_worker_finds(tmp_path: Path) -> None:
    loaded = modules_loaded_after(
        """
        import sys
        import worker
        from celery import Celery
        assert isinstance(worker.app, Celery), type(worker.app)
        assert worker.app is sys.modules["worker.app"].app
        """,
        tmp_path,
    )

    assert "celery" in loaded


def test_the_package_has_no_other_lazy_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = worker.nope


@pytest.mark.parametrize(
    "path", python_files(*SHIPPED), ids=lambda path: str(path.relative_to(ROOT))
)
def test_shipped_code_imports_neither_pytest_nor_the_tests(path: Path) -> None:
    test_imports = {
        name
        for name in imported_modules(path)
        if name.split(".")[0] in ("pytest", "tests", "hypothesis", "_pytest")
    }

    assert test_imports == set()


@pytest.mark.parametrize(
    "path", python_files("worker", "tasks"), ids=lambda path: str(path.relative_to(ROOT))
)
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())

    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines"
