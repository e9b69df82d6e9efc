"""The README's `kcw` commands and Python example, run as written against the real stack."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import (
    ROOT,
    LLMServer,
    RedisServer,
    Worker,
    run_kcw,
    worker_env,
)

README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _kcw_commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("kcw ") and "<job id>" not in line:
                commands.append(line)
    return commands


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README
    assert "make test" in README
    assert "make test" in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("command", _kcw_commands())
def test_readme_kcw_command_works(
    command: str,
    redis_server: RedisServer,
    llm_server: LLMServer,
    worker: Worker,
    tmp_path: Path,
) -> None:
    (tmp_path / "report.txt").write_text(
        "The quarterly report shows revenue up 12 percent, driven by exports.\n\n"
        "Costs rose 3 percent. The board approved a new plant in Porto."
    )
    args = shlex.split(command, comments=True)[1:]
    if "--wait" not in args:
        args.append("--wait")  # so the test sees the job's end, not just its id
    done = run_kcw(args, worker_env(redis_server, llm_server.url), tmp_path, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert '"state": "SUCCESS"' in done.stdout


def test_readme_python_example_runs(
    redis_server: RedisServer, llm_server: LLMServer, worker: Worker, tmp_path: Path
) -> None:
    (example,) = _blocks("python")
    done = subprocess.run(
        [sys.executable, "-c", example],
        env=worker_env(redis_server, llm_server.url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "'attempts':" in done.stdout
