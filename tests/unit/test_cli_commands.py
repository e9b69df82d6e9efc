"""`kcw`: the command table, the exit codes, one-line errors, and `submit`'s payloads.

Every `main` call here stops before Redis: the settings or the payload are refused first.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from worker.cli import exit_codes, main
from worker.cli.commands import COMMANDS
from worker.cli.parser import build_parser, parse_args
from worker.cli.payloads import build_payload, read_text
from worker.config import Settings, get_settings
from worker.errors import (
    JobWaitTimedOut,
    ModelPullError,
    SettingsError,
    StackError,
    UnknownJobKind,
    UsageError,
)

EXIT_CODE_NAMES = ("OK", "FAILED", "USAGE", "TIMED_OUT", "INTERRUPTED")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Run `kcw` from an empty folder (no `.env`), with settings read afresh."""
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(commands.choices)


def submit_args(*argv: str) -> argparse.Namespace:
    return parse_args(["submit", *argv])


# --- the command table and exit codes ---------------------------------------------------------


def test_every_subcommand_has_a_command_and_every_command_a_subcommand() -> None:
    assert subcommands(build_parser()) == set(COMMANDS)


def test_up_and_down_share_one_command() -> None:
    assert COMMANDS["up"] is COMMANDS["down"]
    others = [command for name, command in COMMANDS.items() if name not in ("up", "down")]
    assert len(set(others)) == len(others)


def test_exit_codes_are_distinct_named_ints() -> None:
    assert set(exit_codes.__all__) == set(EXIT_CODE_NAMES)
    values = [getattr(exit_codes, name) for name in EXIT_CODE_NAMES]

    assert all(type(value) is int for value in values)
    assert len(set(values)) == len(values)
    assert exit_codes.OK == 0
    assert exit_codes.USAGE == 2  # what argparse exits with for a bad command line


# --- main: one-line errors and their exit codes -----------------------------------------------


def test_extract_without_a_schema_is_a_usage_error_before_redis(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", "extract", "hello"])

    captured = capsys.readouterr()
    assert code == exit_codes.USAGE
    assert captured.err == "kcw: extract needs --schema JSON (or --schema @schema.json)\n"
    assert captured.out == ""


def test_classify_without_labels_is_a_usage_error(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", "classify", "x"])

    assert code == exit_codes.USAGE
    assert capsys.readouterr().err == "kcw: classify needs --labels a,b,c\n"


def test_a_payload_that_is_not_an_object_is_refused(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", "chat", "--payload", "[1]"])

    assert code == exit_codes.USAGE
    assert capsys.readouterr().err == "kcw: --payload must be a JSON object\n"


def test_a_payload_that_is_not_json_says_where(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", "chat", "--payload", "{nope"])

    assert code == exit_codes.USAGE
    assert capsys.readouterr().err.startswith("kcw: --payload is not valid JSON: ")


@pytest.mark.parametrize(
    "argv",
    [["submit", "chat", "@missing.txt"], ["submit", "chat", "--payload", "@missing.txt"]],
    ids=["text", "payload"],
)
def test_a_missing_input_file_cannot_be_read(
    cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)

    assert code == exit_codes.USAGE
    assert capsys.readouterr().err == "kcw: cannot read missing.txt: No such file or directory\n"


def test_a_file_that_is_not_utf8_is_refused(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cli_env / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))

    code = main(["submit", "summarize", "@latin1.txt"])

    assert code == exit_codes.USAGE
    assert capsys.readouterr().err == "kcw: latin1.txt is not UTF-8 text (byte 3)\n"


def test_submit_without_any_input_says_how_to_give_it(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["submit", "summarize"])

    assert code == exit_codes.USAGE
    assert "give the summarize input as text, @file or - (stdin)" in capsys.readouterr().err


def test_unusable_settings_are_a_usage_error_naming_the_key(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_PORT", "notanumber")

    code = main(["doctor"])

    err = capsys.readouterr().err
    assert code == exit_codes.USAGE
    assert err.startswith("kcw: Invalid settings (fix them in .env or the environment):\n")
    assert "REDIS_PORT='notanumber'" in err


def test_an_unknown_kind_is_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["submit", "nope", "hello"])

    assert caught.value.code == exit_codes.USAGE
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("bad setting"), exit_codes.USAGE),
        (UsageError("bad usage"), exit_codes.USAGE),
        (UnknownJobKind("bad kind"), exit_codes.USAGE),
        (JobWaitTimedOut("still running"), exit_codes.TIMED_OUT),
        (StackError("no docker"), exit_codes.FAILED),
        (ModelPullError("no network"), exit_codes.FAILED),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_each_reported_error_is_one_line_with_its_exit_code(
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    code: int,
) -> None:
    def failing(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
        raise error

    # No command takes its own body as a parameter, so the table entry is swapped.
    monkeypatch.setitem(COMMANDS, "doctor", failing)

    assert main(["doctor"]) == code
    assert capsys.readouterr().err == f"kcw: {error}\n"


def test_ctrl_c_exits_130_quietly(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(COMMANDS, "doctor", interrupted)

    assert main(["doctor"]) == exit_codes.INTERRUPTED == 130
    assert capsys.readouterr().err == ""


def test_an_unexpected_error_is_not_swallowed(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setitem(COMMANDS, "doctor", broken)

    with pytest.raises(RuntimeError, match="a bug"):
        main(["doctor"])


# --- submit's payload per kind ----------------------------------------------------------------


def test_chat_payload_has_the_system_message_and_sampling() -> None:
    options = ["--system", "be brief", "--max-tokens", "32", "--temperature", "0.5"]
    args = submit_args("chat", "hello", "world", *options)

    assert build_payload(args) == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello world"},
        ],
        "max_tokens": 32,
        "temperature": 0.5,
    }


def test_chat_payload_without_options_is_one_user_message() -> None:
    assert build_payload(submit_args("chat", "hi")) == {
        "messages": [{"role": "user", "content": "hi"}]
    }


def test_text_after_the_options_is_still_the_input() -> None:
    args = submit_args("chat", "hello", "--max-tokens", "8", "again")

    assert build_payload(args) == {
        "messages": [{"role": "user", "content": "hello again"}],
        "max_tokens": 8,
    }


def test_summarize_payload_reads_a_file(tmp_path: Path) -> None:
    document = tmp_path / "doc.txt"
    document.write_text("A long document.\nWith two lines.\n", encoding="utf-8")

    payload = build_payload(submit_args("summarize", f"@{document}", "--max-tokens", "64"))

    assert payload == {"text": "A long document.\nWith two lines.\n", "max_tokens": 64}


def test_summarize_payload_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from a pipe"))

    assert build_payload(submit_args("summarize", "-")) == {"text": "from a pipe"}


def test_extract_payload_carries_the_schema_as_given(tmp_path: Path) -> None:
    schema = '{"type": "object", "properties": {"name": {"type": "string"}}}'
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(schema, encoding="utf-8")

    inline = build_payload(submit_args("extract", "Ann is 30", "--schema", schema))
    from_file = build_payload(submit_args("extract", "Ann is 30", "--schema", f"@{schema_file}"))

    assert inline == from_file == {"text": "Ann is 30", "schema": schema}


def test_classify_payload_splits_the_labels_and_drops_empty_ones() -> None:
    payload = build_payload(submit_args("classify", "great stuff", "--labels", "a,b,,c"))

    assert payload == {"text": "great stuff", "labels": ["a", "b", "c"]}


def test_embed_payload_keeps_each_word_as_one_text() -> None:
    payload = build_payload(submit_args("embed", "first text", "second", "third"))

    assert payload == {"texts": ["first text", "second", "third"]}


def test_a_raw_payload_is_sent_as_it_is_whatever_the_kind() -> None:
    raw: dict[str, Any] = {"text": "x", "anything": [1, 2]}

    args = submit_args("extract", "--payload", '{"text": "x", "anything": [1, 2]}')

    assert build_payload(args) == raw


def test_read_text_passes_a_literal_through() -> None:
    assert read_text("plain words") == "plain words"
