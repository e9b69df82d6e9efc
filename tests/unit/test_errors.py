"""The error tree: who is retried, who never is, and what survives the result backend."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from celery import Celery
from celery.backends.base import BaseBackend

from worker import errors
from worker.errors import (
    ContextLengthExceeded,
    InvalidJobInput,
    JobTimedOut,
    LLMError,
    LLMRateLimited,
    LLMRequestRejected,
    LLMResponseInvalid,
    LLMServerDown,
    LLMUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]


def drawn_tree() -> dict[str, str]:
    """Each class the module docstring draws, with the class drawn above it."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^(\s*)((?:[│ ]   )*)(?:[├└]── )?([A-Z][A-Za-z]+)\s{2,}", line)
        if not match or not line.startswith("    "):
            continue
        depth = len(match.group(2)) // 4 + (1 if "──" in line else 0)
        name = match.group(3)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else "Exception"
        stack.append((depth, name))
    return parents


TREE = [
    (getattr(errors, name), getattr(errors, parent, Exception))
    for name, parent in drawn_tree().items()
]
ALL_ERRORS = [cls for cls, _ in TREE]
JOB_ERRORS = [cls for cls in ALL_ERRORS if issubclass(cls, LLMError)]


def test_the_docstring_draws_the_whole_tree() -> None:
    assert len(TREE) >= 20
    assert TREE[0] == (errors.KcwError, Exception)


@pytest.mark.parametrize(("cls", "parent"), TREE, ids=[c.__name__ for c, _ in TREE])
def test_each_error_has_the_parent_the_docstring_draws(
    cls: type[Exception], parent: type[Exception]
) -> None:
    ours = [base for base in cls.__bases__ if base.__module__ == errors.__name__]
    assert (ours or [Exception])[0] is parent


def test_every_exported_error_is_in_the_tree() -> None:
    assert sorted(errors.__all__) == sorted(cls.__name__ for cls in ALL_ERRORS)


def test_no_exception_class_is_defined_outside_the_error_module() -> None:
    outside = []
    for path in [*ROOT.glob("worker/**/*.py"), *ROOT.glob("tasks/**/*.py")]:
        if path == ROOT / "worker/errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
                for base in node.bases
            ):
                outside.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert outside == []


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_says_when_it_is_raised(cls: type[Exception]) -> None:
    assert cls.__doc__
    assert len(cls.__doc__.strip().splitlines()) == 1


def test_retried_and_never_retried_branches_do_not_overlap() -> None:
    retried = [cls for cls in JOB_ERRORS if issubclass(cls, LLMUnavailable)]
    never = [
        cls
        for cls in JOB_ERRORS
        if issubclass(cls, LLMRequestRejected | LLMResponseInvalid | JobTimedOut)
    ]

    assert retried == [LLMUnavailable, LLMServerDown, LLMRateLimited]
    assert not set(retried) & set(never)
    assert set(retried) | set(never) == set(JOB_ERRORS) - {LLMError}


@pytest.mark.parametrize("cls", JOB_ERRORS, ids=lambda c: c.__name__)
def test_str_is_the_message(cls: type[LLMError]) -> None:
    error = cls("Set LLM_MODEL to a served model.")

    assert str(error) == "Set LLM_MODEL to a served model."
    assert error.message == "Set LLM_MODEL to a served model."


def test_unavailable_keeps_retry_after() -> None:
    assert LLMRateLimited("slow down", retry_after=2.5).retry_after == 2.5
    assert LLMUnavailable("down").retry_after is None


def test_response_invalid_keeps_last_output_in_args() -> None:
    error = LLMResponseInvalid("did not match the schema", '{"name": 5}')

    assert error.args == ("did not match the schema", '{"name": 5}')
    assert error.last_output == '{"name": 5}'
    assert str(error) == "did not match the schema"


def test_response_invalid_without_output() -> None:
    error = LLMResponseInvalid("no output")

    assert error.args == ("no output", None)
    assert error.last_output is None


@pytest.mark.parametrize("cls", JOB_ERRORS, ids=lambda c: c.__name__)
def test_errors_rebuild_from_their_args(cls: type[LLMError]) -> None:
    original = cls("the message")

    rebuilt = type(original)(*original.args)

    assert type(rebuilt) is cls
    assert str(rebuilt) == "the message"
    assert rebuilt.args == original.args


def test_response_invalid_rebuilds_with_its_last_output() -> None:
    original = LLMResponseInvalid("bad output", "not json")

    rebuilt = type(original)(*original.args)

    assert isinstance(rebuilt, LLMResponseInvalid)
    assert rebuilt.last_output == "not json"
    assert str(rebuilt) == "bad output"


@pytest.mark.parametrize(
    "error",
    [
        LLMResponseInvalid("bad output", '{"x": 1}'),
        InvalidJobInput("Invalid input for chat: messages: too short"),
        ContextLengthExceeded("does not fit"),
        LLMRateLimited("slow down", retry_after=3.0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_celerys_json_result_backend(error: LLMError) -> None:
    backend = BaseBackend(Celery("roundtrip", set_as_current=False), serializer="json")

    stored = json.loads(json.dumps(backend.prepare_exception(error)))
    rebuilt = backend.exception_to_python(stored)

    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert rebuilt.args == error.args
