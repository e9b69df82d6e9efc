"""`.env.sample` documents every setting, and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from worker.config import Settings

SAMPLE = Path(__file__).resolve().parents[2] / ".env.sample"


def _sample_keys() -> list[str]:
    return re.findall(r"^([A-Z][A-Z0-9_]*)=", SAMPLE.read_text(), flags=re.M)


def test_every_setting_is_in_env_sample() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - set(_sample_keys()) == set()


def test_env_sample_has_no_unknown_or_repeated_keys() -> None:
    keys = _sample_keys()
    assert len(keys) == len(set(keys))
    assert set(keys) - {name.upper() for name in Settings.model_fields} == set()


def test_every_key_has_a_comment_above_it() -> None:
    lines = SAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = lines[index - 1]
            assert above.startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", above), line


def test_every_compose_variable_is_a_setting() -> None:
    root = SAMPLE.parent
    used: set[str] = set()
    for compose in root.glob("docker-compose*.yml"):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose.read_text()))
    assert used, "no compose files found"
    assert used - {name.upper() for name in Settings.model_fields} == set()
