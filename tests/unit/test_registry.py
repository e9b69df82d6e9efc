"""The job registry: the five kinds in order, and a new kind reaching `kcw submit` and the demo."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from worker.cli.demo import demo_jobs
from worker.cli.parser import build_parser, parse_args
from worker.cli.payloads import build_payload
from worker.errors import InvalidJobInput, UnknownJobKind, UsageError
from worker.jobs import registry
from worker.jobs.kind import CliInput, Demo, JobContext, JobKind, task_name

KINDS = ("chat", "summarize", "extract", "classify", "embed")
ECHO = "echo_test"


class EchoInput(BaseModel):
    text: str = Field(min_length=1)


def echo(ctx: JobContext, inp: EchoInput) -> dict[str, Any]:
    return {"text": inp.text}


def echo_payload(cli: CliInput) -> dict[str, Any]:
    return {"text": cli.text, "words": len(cli.words)}


ECHO_DEMO = Demo(
    payload=lambda: {"text": "hello from the demo"},
    brief=lambda payload: repr(payload["text"]),
    highlight=lambda result: str(result["text"]),
)


def make_echo(name: str = ECHO) -> JobKind[EchoInput]:
    return JobKind(
        name=name,
        help="the text as given",
        input_model=EchoInput,
        run=echo,
        cli_payload=echo_payload,
        demo=ECHO_DEMO,
        position=60,
    )


@pytest.fixture
def echo_kind() -> Iterator[JobKind[EchoInput]]:
    kind = make_echo()
    registry.register(kind)
    yield kind
    registry.unregister(kind.name)


def submit_choices(parser: argparse.ArgumentParser) -> list[str]:
    """The `kind` choices of `kcw submit`."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    submit = commands.choices["submit"]
    kind = next(a for a in submit._actions if a.dest == "kind")
    assert kind.choices is not None
    return list(kind.choices)


def test_the_five_kinds_are_registered_in_listing_order() -> None:
    assert registry.names() == KINDS
    assert [kind.name for kind in registry.kinds()] == list(KINDS)


def test_each_kind_has_the_task_name_kcw_dot_kind() -> None:
    assert [kind.task_name for kind in registry.kinds()] == [f"kcw.{name}" for name in KINDS]
    assert task_name("anything") == "kcw.anything"


def test_get_returns_the_registered_kind() -> None:
    for kind in registry.kinds():
        assert registry.get(kind.name) is kind


def test_an_unknown_kind_is_a_usage_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownJobKind) as caught:
        registry.get("nope")

    assert isinstance(caught.value, UsageError)
    message = str(caught.value)
    assert "'nope'" in message
    assert "chat, summarize, extract, classify, embed" in message


def test_a_second_kind_under_a_taken_name_is_refused(echo_kind: JobKind[EchoInput]) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(make_echo())

    assert registry.get(ECHO) is echo_kind


def test_registering_the_same_kind_again_changes_nothing(
    echo_kind: JobKind[EchoInput],
) -> None:
    assert registry.register(echo_kind) is echo_kind
    assert registry.names().count(ECHO) == 1


def test_a_registered_kind_is_listed_by_position_after_the_built_in_ones(
    echo_kind: JobKind[EchoInput],
) -> None:
    assert registry.names() == (*KINDS, ECHO)


def test_unregister_removes_a_kind_and_ignores_an_unknown_name() -> None:
    kind = registry.register(make_echo("gone_test"))
    assert registry.get("gone_test") is kind

    registry.unregister("gone_test")
    registry.unregister("gone_test")

    assert "gone_test" not in registry.names()
    with pytest.raises(UnknownJobKind):
        registry.get("gone_test")


def test_a_new_kind_is_a_choice_of_kcw_submit_with_its_own_payload(
    echo_kind: JobKind[EchoInput],
) -> None:
    assert submit_choices(build_parser()) == [*KINDS, ECHO]
    args = parse_args(["submit", ECHO, "hello", "there"])

    payload = build_payload(args)

    assert args.kind == ECHO
    assert payload == {"text": "hello there", "words": 2}
    assert echo_kind.parse(payload) == EchoInput(text="hello there")


def test_a_kind_is_not_a_choice_of_kcw_submit_once_unregistered() -> None:
    kind = registry.register(make_echo("brief_test"))
    assert "brief_test" in submit_choices(build_parser())

    registry.unregister(kind.name)

    assert submit_choices(build_parser()) == list(KINDS)
    with pytest.raises(SystemExit):
        parse_args(["submit", "brief_test", "hello"])


def test_a_new_kind_with_a_demo_joins_the_demo(echo_kind: JobKind[EchoInput]) -> None:
    jobs = demo_jobs()

    assert [kind.name for kind, _ in jobs] == ["chat", "summarize", "extract", "classify", ECHO]
    assert jobs[-1] == (echo_kind, {"text": "hello from the demo"})


def test_kinds_without_a_demo_stay_out_of_the_demo() -> None:
    without = [kind.name for kind in registry.kinds() if kind.demo is None]

    assert without == ["embed"]
    assert "embed" not in [kind.name for kind, _ in demo_jobs()]


def test_a_kind_validates_its_payload_with_its_input_model(
    echo_kind: JobKind[EchoInput],
) -> None:
    with pytest.raises(InvalidJobInput, match=ECHO):
        echo_kind.parse({"text": ""})
    with pytest.raises(InvalidJobInput, match="expected a JSON object"):
        echo_kind.parse(["hello"])
