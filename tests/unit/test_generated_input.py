"""Generated bad input for every job kind's input model and for `kcw submit`, in this process.

Each wrong payload or command line must end as a clear error that names what to fix
(`InvalidJobInput`, or a usage error with exit 2), never a crash or a traceback. Hand-picked
edge cases (each once a crash) run beside the generated ones. The same bad jobs through a real
worker are in `tests/faults/test_generated_input.py`, which also checks the total count.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.generated import (
    ACCEPTED_KEYS,
    CASES,
    CLI_EDGE_CASES,
    CLI_EXAMPLES,
    EDGE_CASES,
    IN_PROCESS_EXAMPLES,
    KINDS,
    LONGEST_MESSAGE,
    MODELS,
    NOT_AN_OBJECT_EXAMPLES,
    SCHEMA_EXAMPLES,
    bad_schemas,
    deep_values,
    edge_text,
    generated,
    json_leaf,
    mutated,
    non_objects,
    write_counts,
)
from tests.support.processes import free_port
from worker import cli
from worker.config import get_settings
from worker.errors import InvalidJobInput
from worker.jobs.inputs import parse_input


@pytest.fixture(scope="module", autouse=True)
def _counts() -> Iterator[None]:
    """After the last test, the counts go where a fault-tier run asked for them (if it did)."""
    yield
    write_counts()


# ---------------------------------------------------------------- edge cases


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


# ---------------------------------------------------------------- layer 1: the input models


def check_parse(kind: str, payload: Any) -> None:
    """The payload is valid, or InvalidJobInput says what is wrong; nothing else may escape."""
    model = MODELS[kind]
    try:
        result = parse_input(model, kind, payload)
    except InvalidJobInput as exc:
        message = str(exc)
        prefix = f"Invalid input for {kind}: "
        assert message.startswith(prefix), message
        detail = message.removeprefix(prefix)
        assert detail.strip(), message
        named = {*ACCEPTED_KEYS[kind], "input", "JSON object"}
        if isinstance(payload, dict):
            # Keys as messages write them: "" for the empty key, lone surrogates escaped.
            named |= {
                str(key).encode("utf-8", "backslashreplace").decode("utf-8") or '""'
                for key in payload
            }
        assert any(name and name in detail for name in named), message
        if len(message) > LONGEST_MESSAGE["chars"]:
            LONGEST_MESSAGE.update(chars=len(message), kind=kind, start=message[:160])
    else:
        assert isinstance(result, model)
    CASES["in-process"] += 1


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_ends_valid_or_as_invalid_job_input(kind: str) -> None:
    @generated(IN_PROCESS_EXAMPLES)
    @given(payload=mutated(kind))
    def run(payload: dict[str, Any]) -> None:
        check_parse(kind, payload)

    run()


@generated(SCHEMA_EXAMPLES)
@given(schema=bad_schemas(), instructions=st.none() | edge_text)
def test_extract_schema_not_json_or_not_a_schema_is_invalid_input(
    schema: Any, instructions: str | None
) -> None:
    payload: dict[str, Any] = {"text": "Ann is 3.", "schema": schema}
    if instructions is not None:
        payload["instructions"] = instructions
    check_parse("extract", payload)


@generated(NOT_AN_OBJECT_EXAMPLES)
@given(
    kind=st.sampled_from(KINDS),
    payload=st.one_of(
        non_objects,
        deep_values(3000, ("list",)),
        st.binary(max_size=20),
        st.tuples(json_leaf, json_leaf),
        st.dictionaries(st.integers(), json_leaf, min_size=1, max_size=3),
    ),
)
def test_payload_that_is_not_a_json_object_is_invalid_input(kind: str, payload: Any) -> None:
    check_parse(kind, payload)


# ---------------------------------------------------------------- layer 2: `kcw submit`

# `kcw submit`'s long options: a made-up option must not abbreviate one of them.
LONG_OPTIONS = (
    "payload", "system", "schema", "labels", "max-tokens", "temperature", "wait", "timeout", "help",
)  # fmt: skip
# Command lines cannot hold NUL; undecodable bytes arrive as U+DC80..U+DCFF (surrogateescape).
CLI_CHAR = st.characters(exclude_characters="\x00", exclude_categories=["Cs"]) | st.characters(
    min_codepoint=0xDC80, max_codepoint=0xDCFF, categories=["Cs"]
)
cli_text = st.text(CLI_CHAR, max_size=40)
cli_words = st.text(CLI_CHAR, min_size=1, max_size=20).filter(
    lambda s: bool(s.strip()) and not s.startswith(("@", "-"))
)


def _not_a_json_object(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return True


def _no_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


def _no_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


bad_payload_text = st.one_of(
    cli_text.filter(_not_a_json_object),
    non_objects.map(json.dumps),
    st.builds(
        lambda value, cut: json.dumps(value)[:cut],
        st.dictionaries(st.text(max_size=5), json_leaf, min_size=1, max_size=3),
        st.integers(0, 30),
    ).filter(_not_a_json_object),
)
file_text = bad_payload_text.filter(lambda text: not _has_surrogate(text))


@dataclass
class CliCase:
    """A command line for `kcw`, what its stderr must say (any one of), stdin, files to write.

    `{dir}` in an argument is the case's own folder.
    """

    argv: list[str]
    says: tuple[str, ...]
    stdin: str = ""
    files: dict[str, str] = field(default_factory=dict)


PAYLOAD_ERRORS = ("--payload is not valid JSON", "--payload must be a JSON object", "cannot read")
COMMANDS = ("doctor", "up", "down", "wait", "submit", "result", "models", "demo")


@st.composite
def bad_command_lines(draw: st.DrawFn) -> CliCase:
    """`kcw` command lines that must be refused before any network; the text comes first."""
    kind = draw(st.sampled_from(KINDS))
    text = draw(cli_words)
    shape = draw(st.integers(0, 13))
    if shape == 0:
        return CliCase(["submit", kind, f"--payload={draw(bad_payload_text)}"], PAYLOAD_ERRORS)
    if shape == 1:
        return CliCase(
            ["submit", kind, "--payload", "@{dir}/payload.json"],
            PAYLOAD_ERRORS,
            files={"payload.json": draw(file_text)},
        )
    if shape == 2:
        name = draw(cli_text)
        return CliCase(["submit", kind, "--payload", f"@{{dir}}/missing/{name}"], ("cannot read",))
    if shape == 3:
        folder = draw(st.sampled_from(["@{dir}", "@"]))
        return CliCase(["submit", kind, "--payload", folder], ("cannot read",))
    if shape == 4:
        return CliCase(["submit", kind, "--payload", "-"], PAYLOAD_ERRORS, stdin=draw(file_text))
    if shape == 5:
        missing = draw(st.sampled_from(["@{dir}/missing.txt", "@{dir}", "@"]))
        return CliCase(["submit", kind, missing], ("cannot read",))
    if shape == 6:
        empty = draw(st.sampled_from([[], [""], ["-"]]))
        return CliCase(["submit", kind, *empty], (f"give the {kind} input",))
    if shape == 7:
        schema = draw(st.sampled_from([[], ["--schema="], ["--schema", "@{dir}/no.json"]]))
        says = ("cannot read",) if schema[1:] else ("extract needs --schema",)
        return CliCase(["submit", "extract", text, *schema], says)
    if shape == 8:
        labels = draw(st.sampled_from([[], ["--labels="]]))
        return CliCase(["submit", "classify", text, *labels], ("classify needs --labels",))
    if shape == 9:
        unknown = draw(cli_text.filter(lambda s: s not in KINDS))
        return CliCase(["submit", "--", unknown, text], ("invalid choice",))
    if shape == 10:
        option = draw(st.sampled_from(["--max-tokens", "--temperature", "--timeout"]))
        check = _no_int if option == "--max-tokens" else _no_float
        value = draw(cli_text.filter(check))
        return CliCase(["submit", kind, text, f"{option}={value}"], (f"argument {option}",))
    if shape == 11:
        word = draw(
            st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
                lambda w: not any(option.startswith(w) for option in LONG_OPTIONS)
            )
        )
        return CliCase(["submit", kind, text, f"--{word}"], ("unrecognized arguments",))
    if shape == 12:
        word = draw(cli_text.filter(lambda s: s not in COMMANDS and not s.startswith("-")))
        if not word:
            return CliCase([], ("the following arguments are required: command",))
        return CliCase([word], ("invalid choice",))
    # Good text and options beside it change nothing: --payload is sent as it is, or refused.
    others = draw(st.sampled_from([[], ["--wait"], ["--system", text], ["--max-tokens", "8"]]))
    payload = f"--payload={draw(bad_payload_text)}"
    return CliCase(["submit", kind, text, *others, payload], PAYLOAD_ERRORS)


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """`kcw ARGV` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def cli_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with no `.env`, and settings aimed at a port where no Redis listens."""
    prefixes = ("REDIS_", "LLM_", "TASK_", "WORKER_", "EXTRACT_", "SUMMARY_", "RESULT_")
    for key in list(os.environ):
        if key.upper().startswith(prefixes):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(free_port()))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_reports_every_bad_submit_as_a_usage_error(cli_cwd: Path) -> None:
    # A good command line gets as far as Redis (down here: exit 1), so exit 2 below means
    # the command line itself was refused, before any network.
    code, out, err = run_cli(["submit", "chat", "hi"])
    assert (code, out) == (1, ""), err
    assert "[FAIL] Redis" in err and "not reachable" in err

    folders = itertools.count()

    @generated(CLI_EXAMPLES)
    @given(case=bad_command_lines())
    def run(case: CliCase) -> None:
        folder = cli_cwd / f"case-{next(folders)}"
        folder.mkdir()
        for name, content in case.files.items():
            (folder / name).write_text(content, encoding="utf-8")
        argv = [arg.replace("{dir}", str(folder)) for arg in case.argv]
        code, out, err = run_cli(argv, case.stdin)
        assert code == 2, (argv, code, out, err)
        assert out == "", (argv, out)
        assert err.strip(), argv
        assert "Traceback" not in err, err
        assert err.startswith("kcw: ") or "usage: kcw" in err, err
        assert any(words in err for words in case.says), (argv, err)
        CASES["cli"] += 1

    run()


# ---------------------------------------------------------------- hand-picked edge cases

IN_PROCESS_EDGE_CASES = (
    "extract-schema-text-with-an-escaped-surrogate-key",
    "extract-$schema-not-a-string",
    "extract-$schema-a-list",
    "chat-temperature-too-big-for-a-float",
    "classify-repeated-label-with-lone-surrogate",
    "extract-bad-schema-under-a-surrogate-key",
)


@pytest.mark.parametrize("name", IN_PROCESS_EDGE_CASES)
def test_edge_case_is_invalid_input_in_process(name: str) -> None:
    kind, payload, _ = EDGE_CASES[name]
    with pytest.raises(InvalidJobInput):
        parse_input(MODELS[kind], kind, payload)


@pytest.mark.parametrize(("argv", "files"), CLI_EDGE_CASES)
def test_edge_case_cli_is_a_usage_error(
    cli_cwd: Path, argv: list[str], files: dict[str, bytes]
) -> None:
    """Each of these once escaped `kcw submit` as a traceback."""
    for name, content in files.items():
        (cli_cwd / name).write_bytes(content)
    code, out, err = run_cli([arg.replace("{dir}", str(cli_cwd)) for arg in argv])
    assert (code, out) == (2, ""), err
    assert err.startswith("kcw: "), err


def test_text_after_options_is_accepted(cli_cwd: Path) -> None:
    """A good command line with its options first gets as far as Redis (down here: exit 1)."""
    code, _, err = run_cli(["submit", "chat", "--max-tokens", "8", "hello"])
    assert code == 1, err
    assert "[FAIL] Redis" in err
