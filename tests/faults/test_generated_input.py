"""Generated bad input, for every job kind's input model, for `kcw submit`, and for the real worker.

Each wrong payload or command line must end as a clear error that names what to fix (a failed
job with a known error class, or a usage error), never a crash, a traceback or a job that hangs.
Hand-picked edge cases (each once a crash or a hang) run beside the generated ones.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.faults.report import Row
from tests.integration.processes import Worker, free_port
from worker import cli, errors
from worker.config import get_settings
from worker.errors import InvalidJobInput
from worker.jobs.chat import ChatInput
from worker.jobs.classify import ClassifyInput
from worker.jobs.embed import EmbedInput
from worker.jobs.extract import ExtractInput
from worker.jobs.inputs import MAX_SCHEMA_CHARS, parse_input
from worker.jobs.summarize import SummarizeInput

F = TypeVar("F", bound=Callable[..., Any])

# The model each task validates its payload with (tasks/<kind>.py: parse_input(Model, kind, ...)).
MODELS: dict[str, type[BaseModel]] = {
    "chat": ChatInput,
    "summarize": SummarizeInput,
    "extract": ExtractInput,
    "classify": ClassifyInput,
    "embed": EmbedInput,
}
KINDS = tuple(MODELS)
REGISTERED = {f"kcw.{kind}" for kind in KINDS} | {"kcw.summarize.chunk", "kcw.summarize.combine"}
# Field names as a payload spells them (ExtractInput takes `schema`, and `json_schema` too).
FIELDS = {
    kind: [f.alias or name for name, f in m.model_fields.items()] for kind, m in MODELS.items()
}
REQUIRED = {
    kind: [f.alias or name for name, f in m.model_fields.items() if f.is_required()]
    for kind, m in MODELS.items()
}
ACCEPTED_KEYS = {kind: {*names, *MODELS[kind].model_fields} for kind, names in FIELDS.items()}
# List fields and their item limits, with one item to repeat past the limit.
LIST_LIMITS: dict[str, dict[str, tuple[int, Any]]] = {
    "chat": {"messages": (1000, {"role": "user", "content": "hi"}), "stop": (8, "x")},
    "classify": {"labels": (200, "a"), "examples": (50, {"text": "y", "label": "a"})},
    "embed": {"texts": (2048, "hi")},
}
# Error classes a failed job may carry: the worker's tree, plus Celery's for an unknown name.
KNOWN_ERRORS = {*errors.__all__, "NotRegistered"}
GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}

IN_PROCESS_EXAMPLES = 400  # per kind, plus the schema and non-object tests below
SCHEMA_EXAMPLES = 400
NOT_AN_OBJECT_EXAMPLES = 150
CLI_EXAMPLES = 500
WORKER_EXAMPLES = 240
WORKER_WAIT_S = 180.0
MIN_TOTAL = 1000

# Generated cases run, per layer; the last test checks the total and records it.
CASES: Counter[str] = Counter()
WORKER_FIGURES: dict[str, float] = {}
LONGEST_MESSAGE: dict[str, Any] = {"chars": 0}


def generated(examples: int, *also: HealthCheck) -> Callable[[F], F]:
    """Hypothesis settings for these tests: big values are the point, so no size or time checks."""
    checks = [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
        *also,
    ]
    # The same cases on every run, so a red run can be repeated; KCW_HYPOTHESIS_RANDOM=1
    # draws new ones (hypothesis prints the failing case to paste into a test).
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=checks,
        derandomize=os.environ.get("KCW_HYPOTHESIS_RANDOM") != "1",
    )


# ---------------------------------------------------------------- values

EDGE_STRINGS = (
    "",
    " ",
    "\t\n ",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\ufeff",  # byte order mark
    "\u2028",  # line separator
    "\u3000",  # ideographic space: blank to str.strip()
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "x\udc80y",
    "\U0001f642",  # emoji
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # ZWJ sequence
    "e\u0301",  # combining acute
    "Z\u0351\u0324\u0300\u0300\u0300",  # stacked combining marks
    "\U0010ffff",
    "\uffff",
    "\U0001d54f\U0001d550",  # mathematical double-struck letters
    "null",
    "{}",
    "[]",
)
ANY_CHAR = (
    st.characters()
    | st.characters(codec=None, categories=["Cs"])
    | st.sampled_from("\x00\u202e\u200f\u0301\ufeff\u2028")
)
edge_text = (
    st.sampled_from(EDGE_STRINGS)
    | st.text(ANY_CHAR, max_size=12)
    | st.lists(st.sampled_from(EDGE_STRINGS), min_size=1, max_size=4).map("".join)
)
json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | edge_text
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(edge_text, inner, max_size=4),
    max_leaves=10,
)
non_objects = json_values.filter(lambda value: not isinstance(value, dict))


def nest(depth: int, container: str, leaf: Any) -> Any:
    """`leaf` wrapped `depth` times in lists or in single-key objects."""
    value = leaf
    for _ in range(depth):
        value = [value] if container == "list" else {"a": value}
    return value


def deep_values(max_depth: int, containers: tuple[str, ...] = ("list", "dict")) -> Any:
    return st.builds(nest, st.integers(30, max_depth), st.sampled_from(containers), json_leaf)


def deep_json_text(max_depth: int) -> Any:
    """JSON text nested `depth` levels deep, written without recursion."""

    def text(depth: int, container: str) -> str:
        if container == "list":
            return "[" * depth + "1" + "]" * depth
        return '{"a":' * depth + "1" + "}" * depth

    return st.builds(text, st.integers(30, max_depth), st.sampled_from(["list", "dict"]))


def huge_text(sizes: tuple[int, ...]) -> Any:
    """One character repeated just past a model's limits (2,000 to 5,000,000 characters).

    Past a million characters only one-byte characters, so a value stays about 5 MB.
    """
    small = [n for n in sizes if n <= 1_000_001]
    big = [n for n in sizes if n > 1_000_001]
    any_char = st.sampled_from(["x", "\u00e9", "\U0001f642", " ", "\u0301"])
    one_byte = st.sampled_from(["x", "\u00e9", " "])
    texts = [st.builds(lambda char, n: char * n, any_char, st.sampled_from(small))] if small else []
    if big:
        texts.append(st.builds(lambda char, n: char * n, one_byte, st.sampled_from(big)))
    return st.one_of(texts)


IN_PROCESS_HUGE = (2_001, 10_001, 100_001, 1_000_001)
SUMMARY_HUGE = (*IN_PROCESS_HUGE, 5_000_001)  # a summary's text may hold five million
WORKER_HUGE = (2_001, 10_001)

# ---------------------------------------------------------------- valid payloads to start from

nonblank = st.text(min_size=1, max_size=30).filter(lambda s: bool(s.strip()))
VALID_SCHEMAS = (
    {"type": "object"},
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
    },
    {"type": "array", "items": {"type": "number"}},
)
valid_schemas = st.sampled_from(VALID_SCHEMAS) | st.sampled_from(VALID_SCHEMAS).map(json.dumps)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": nonblank}
)
BASES: dict[str, Any] = {
    "chat": st.fixed_dictionaries(
        {"messages": st.lists(message, min_size=1, max_size=3)},
        optional={
            "max_tokens": st.integers(1, 32768),
            "temperature": st.floats(0.0, 2.0),
            "top_p": st.floats(0.01, 1.0),
            "seed": st.integers(-(2**63), 2**63),
            "stop": st.lists(nonblank, max_size=8),
        },
    ),
    "summarize": st.fixed_dictionaries(
        {"text": nonblank},
        optional={"max_tokens": st.integers(16, 4096), "instructions": st.text(max_size=40)},
    ),
    "extract": st.fixed_dictionaries(
        {"text": nonblank, "schema": valid_schemas},
        optional={"max_tokens": st.integers(1, 32768), "instructions": st.text(max_size=40)},
    ),
    "classify": st.fixed_dictionaries(
        {
            "text": nonblank,
            "labels": st.lists(nonblank, min_size=2, max_size=5, unique_by=str.strip),
        }
    ),
    "embed": st.fixed_dictionaries(
        {"texts": nonblank | st.lists(nonblank, min_size=1, max_size=4)}
    ),
}

# ---------------------------------------------------------------- bad JSON Schemas

SCHEMA_KEYWORDS = (
    "$schema", "$id", "$ref", "$defs", "$anchor", "$dynamicRef", "$vocabulary", "$comment",
    "type", "properties", "items", "required", "enum", "const", "pattern", "patternProperties",
    "format", "minimum", "maxLength", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
    "additionalProperties", "definitions", "dependencies", "dependentSchemas", "prefixItems",
    "unevaluatedProperties", "contains", "propertyNames",
)  # fmt: skip
NOT_SCHEMAS: tuple[dict[str, Any], ...] = (
    {"type": 12},
    {"type": "nope"},
    {"type": ["string", "string"]},
    {"properties": 5},
    {"properties": {"a": 5}},
    {"required": "a"},
    {"required": [1]},
    {"minimum": "x"},
    {"pattern": "("},
    {"items": 3},
    {"enum": 5},
    {"allOf": {}},
    {"anyOf": []},
    {"$ref": 5},
    {"additionalProperties": "no"},
    {"description": "x" * (MAX_SCHEMA_CHARS + 1)},
)


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return True
    return False


def bad_schemas(worker: bool = False) -> Any:
    """Schemas that are not JSON, not an object, or not a JSON Schema (some are valid)."""
    return st.one_of(
        st.text(ANY_CHAR, max_size=40).filter(_not_json),
        st.builds(
            lambda schema, cut: json.dumps(schema)[:cut],
            st.sampled_from(VALID_SCHEMAS),
            st.integers(0, 60),
        ),
        non_objects,
        non_objects.map(json.dumps),
        st.sampled_from(NOT_SCHEMAS),
        st.sampled_from(NOT_SCHEMAS).map(json.dumps),
        st.dictionaries(st.sampled_from(SCHEMA_KEYWORDS), json_values, min_size=1, max_size=4),
        st.dictionaries(st.sampled_from(SCHEMA_KEYWORDS), json_values, min_size=1).map(json.dumps),
        huge_text((MAX_SCHEMA_CHARS + 1,) if worker else (MAX_SCHEMA_CHARS + 1, 1_000_001)),
        deep_values(400 if worker else 3000),
        deep_json_text(400 if worker else 20_000),
    )


# ---------------------------------------------------------------- mutations


def _extra_key(kind: str) -> Any:
    return edge_text.filter(lambda key: key not in ACCEPTED_KEYS[kind])


def _bad_message(worker: bool) -> Any:
    return st.one_of(
        st.fixed_dictionaries({"role": edge_text | json_values, "content": nonblank}),
        st.fixed_dictionaries({"role": st.just("user"), "content": edge_text | json_values}),
        st.fixed_dictionaries({"role": st.just("user")}),
        st.fixed_dictionaries({"content": nonblank}),
        st.fixed_dictionaries(
            {"role": st.just("user"), "content": st.sampled_from([" ", "\u3000", "\t\n"])}
        ),
        st.fixed_dictionaries({"role": st.just("user"), "content": nonblank, "name": json_values}),
        st.fixed_dictionaries(
            {"role": st.just("user"), "content": huge_text(WORKER_HUGE if worker else (1_000_001,))}
        ),
        json_values,
    )


def _bad_example() -> Any:
    return st.one_of(
        st.fixed_dictionaries({"text": edge_text | json_values, "label": edge_text | json_values}),
        st.fixed_dictionaries({"text": nonblank}),
        st.fixed_dictionaries({"text": huge_text((10_001,)), "label": nonblank}),
        st.fixed_dictionaries({"text": nonblank, "label": nonblank, "extra": json_values}),
        json_values,
    )


def _mutate(draw: st.DrawFn, kind: str, payload: dict[str, Any], op: str, worker: bool) -> None:
    """Change `payload` in place: one operation from OPS on one of its fields."""
    names = FIELDS[kind]
    target = draw(st.sampled_from(names))
    if op == "drop":
        if payload:
            del payload[draw(st.sampled_from(sorted(payload)))]
    elif op == "extra":
        payload[draw(_extra_key(kind))] = draw(json_values)
    elif op == "wrong":
        payload[target] = draw(json_values)
    elif op == "huge":
        sizes = SUMMARY_HUGE if kind == "summarize" else IN_PROCESS_HUGE
        payload[target] = draw(huge_text(WORKER_HUGE if worker else sizes))
    elif op == "deep":
        payload[target] = draw(deep_values(400 if worker else 3000))
    elif op == "edge":
        payload[target] = draw(edge_text)
    elif op == "many" and kind in LIST_LIMITS:
        name = draw(st.sampled_from(sorted(LIST_LIMITS[kind])))
        limit, item = LIST_LIMITS[kind][name]
        payload[name] = [item] * (limit + draw(st.integers(1, 3)))
    elif op == "nested" and kind == "chat":
        payload["messages"] = draw(st.lists(_bad_message(worker) | message, min_size=1, max_size=3))
    elif op == "nested" and kind == "classify":
        payload["examples"] = draw(st.lists(_bad_example(), min_size=1, max_size=3))
    elif op == "nested" and kind == "extract":
        payload["schema"] = draw(bad_schemas(worker))
    else:
        payload[target] = draw(edge_text)


OPS = ("drop", "extra", "wrong", "huge", "deep", "edge", "many", "nested")


@st.composite
def mutated(draw: st.DrawFn, kind: str, worker: bool = False) -> dict[str, Any]:
    """A valid payload of `kind` with a few things changed (it may still be valid)."""
    payload = dict(draw(BASES[kind]))
    for _ in range(draw(st.integers(0 if worker else 1, 2 if worker else 3))):
        _mutate(draw, kind, payload, draw(st.sampled_from(OPS)), worker)
    return payload


FORCED = ("extra", "not-an-object", "drop-required", "wrong-type", "deep-list", "many", "over")


@st.composite
def certainly_bad(draw: st.DrawFn, kind: str) -> Any:
    """A payload of `kind` that no model accepts, whatever else it holds: no real LLM job runs."""
    payload = draw(mutated(kind, worker=True))
    op = draw(st.sampled_from(FORCED))
    field_name = draw(st.sampled_from(FIELDS[kind]))
    if op == "not-an-object":
        return draw(non_objects | deep_values(400, ("list",)))
    if op == "drop-required":
        payload.pop(draw(st.sampled_from(REQUIRED[kind])), None)
        payload.pop("json_schema", None)
    elif op == "deep-list":
        payload[field_name] = draw(deep_values(400, ("list",)))
    elif op == "many" and kind in LIST_LIMITS:
        _mutate(draw, kind, payload, "many", True)
    elif op == "over" and "instructions" in FIELDS[kind]:
        payload["instructions"] = draw(huge_text(WORKER_HUGE))
    elif op == "over" and kind == "extract":
        payload["schema"] = "x" * (MAX_SCHEMA_CHARS + 1)
    elif op in ("wrong-type", "many", "over"):
        payload[field_name] = "{not json" if field_name == "schema" else {"not": ["valid"]}
    else:
        payload[draw(_extra_key(kind))] = draw(json_values)
    return payload


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


# ---------------------------------------------------------------- layer 3: the real worker

OVER_CONTEXT_WORDS = "word " * 30_000  # about 30,000 tokens; the test server has 4,096
# Hand-written cases, each with the error classes it may end with.
CONTEXT_ERRORS = {"ContextLengthExceeded"}
FIXED_WORKER_CASES: list[tuple[str, Any, set[str]]] = [
    (
        "kcw.chat",
        {"messages": [{"role": "user", "content": OVER_CONTEXT_WORDS}], "max_tokens": 8},
        CONTEXT_ERRORS,
    ),
    (
        "kcw.extract",
        {"text": OVER_CONTEXT_WORDS, "schema": {"type": "object"}, "max_tokens": 8},
        CONTEXT_ERRORS,
    ),
    ("kcw.classify", {"text": OVER_CONTEXT_WORDS, "labels": ["spam", "ham"]}, CONTEXT_ERRORS),
    # The test server serves no embeddings; one that does must refuse the length instead.
    ("kcw.embed", {"texts": [OVER_CONTEXT_WORDS]}, {*CONTEXT_ERRORS, "EmbeddingsUnsupported"}),
    (
        "kcw.chat",
        {"messages": [{"role": "user", "content": "x" * 1_000_001}]},
        {"InvalidJobInput"},
    ),
    ("kcw.summarize", {"text": "x" * 5_000_001}, {"InvalidJobInput"}),
    ("kcw.nope", {"text": "hi"}, {"NotRegistered"}),
    ("kcw.", {"text": "hi"}, {"NotRegistered"}),
    ("kcw.CHAT", GOOD_CHAT, {"NotRegistered"}),
]
unknown_task_names = (
    st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
    .map(lambda name: f"kcw.{name}")
    .filter(lambda name: name not in REGISTERED)
)


@st.composite
def worker_cases(draw: st.DrawFn) -> tuple[str, Any]:
    if draw(st.integers(0, 19)) == 0:
        return draw(unknown_task_names), draw(st.sampled_from([GOOD_CHAT, {"text": "hi"}]))
    kind = draw(st.sampled_from(KINDS))
    return f"kcw.{kind}", draw(certainly_bad(kind))


def wait_all(jobs: list[Any], timeout: float) -> list[Any]:
    """Poll until every job is ready or the shared deadline passes; the ones still not ready."""
    deadline = time.monotonic() + timeout
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
        pending = [job for job in pending if not job.ready()]
        if pending:
            time.sleep(0.2)
    return pending


def release(app: Any, jobs: list[Any]) -> None:
    """Stop listening for these results while Redis is still up (not at garbage collection)."""
    for job in jobs:
        app.backend.remove_pending_result(job)


def unclear(name: str, job: Any, allowed: set[str] | None = None) -> str | None:
    """Why a finished bad job's error is not clear, or None when it is."""
    if job.state != "FAILURE":
        return f"ended {job.state}: {job.result!r:.200}"
    error, message = type(job.result).__name__, str(job.result)
    if error not in (allowed or KNOWN_ERRORS):
        return f"failed with {error}: {message:.200}"
    if not message.strip():
        return f"{error} with an empty message"
    kind = name.removeprefix("kcw.")
    if error == "InvalidJobInput" and not message.startswith(f"Invalid input for {kind}: "):
        return f"InvalidJobInput does not name the job: {message:.200}"
    if error == "NotRegistered" and name not in message:
        return f"NotRegistered does not name the task: {message:.200}"
    return None


def deepest_sendable(app: Any, task: str, top: int = 995, bottom: int = 940) -> tuple[int, Any]:
    """Send the most deeply nested payload the client can encode, from a fresh thread's stack."""
    sent: dict[str, Any] = {}

    def send() -> None:
        for depth in range(top, bottom, -5):
            try:
                sent["job"] = app.send_task(task, args=[{"messages": nest(depth, "list", "x")}])
            except Exception:  # kombu's EncodeError: too deep for this stack; try shallower
                continue
            sent["depth"] = depth
            return

    thread = threading.Thread(target=send)
    thread.start()
    thread.join(30)
    assert "job" in sent, f"no payload between {bottom} and {top} levels could be encoded"
    return sent["depth"], sent["job"]


# Inputs that once got past validation, or crashed it; each must end as InvalidJobInput.
EDGE_CASES: dict[str, tuple[str, Any, str]] = {
    "extract-$schema-not-a-string": (
        "extract",
        {"text": "Ann is 3.", "schema": {"$schema": 5}},
        "jsonschema's validator_for raises AttributeError ('int' object has no attribute "
        "'decode') for a non-string $schema; pydantic passes it through",
    ),
    "extract-$schema-a-list": (
        "extract",
        {"text": "Ann is 3.", "schema": {"$schema": ["x"]}},
        "validator_for raises TypeError (unhashable type: 'list') for a list or object $schema",
    ),
    "chat-temperature-too-big-for-a-float": (
        "chat",
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 10**400},
        "Sampling._int_is_a_float calls float() on the int: OverflowError escapes validation",
    ),
    "classify-repeated-label-with-lone-surrogate": (
        "classify",
        {"text": "x", "labels": ["\ud800", "\ud800"]},
        "the 'labels repeat: ...' message holds a lone surrogate; pydantic-core cannot encode "
        "it and raises UnicodeEncodeError",
    ),
    "extract-bad-schema-under-a-surrogate-key": (
        "extract",
        {"text": "x", "schema": {"properties": {"\ud800": {"type": 5}}}},
        "the schema error's path holds a lone surrogate: UnicodeEncodeError",
    ),
    "chat-stop-with-lone-surrogate": (
        "chat",
        {"messages": [{"role": "user", "content": "hi"}], "stop": ["\ud800"], "max_tokens": 8},
        "stop strings are not checked for lone surrogates; the request cannot be encoded and "
        "the job fails as 'Unexpected answer from the LLM server'",
    ),
    "classify-label-with-lone-surrogate": (
        "classify",
        {"text": "x", "labels": ["\ud800", "b"]},
        "labels are not checked for lone surrogates: 'Unexpected answer from the LLM server'",
    ),
    "extract-schema-with-nan": (
        "extract",
        {"text": "x", "schema": {"type": "number", "minimum": float("nan")}},
        "NaN passes the schema check but not httpx's JSON encoder: 'Unexpected answer from the "
        "LLM server: Out of range float values are not JSON compliant'",
    ),
    "extract-schema-text-with-an-escaped-surrogate-key": (
        "extract",
        {"text": "x", "schema": '{"$defs": {"\\ud800": null}}'},
        "the schema string is clean text, but parsed it holds a lone surrogate key",
    ),
}
DEEP_CASE = "chat-nested-too-deep-for-the-worker-to-decode"
IN_PROCESS_EDGE_CASES = (
    "extract-schema-text-with-an-escaped-surrogate-key",
    "extract-$schema-not-a-string",
    "extract-$schema-a-list",
    "chat-temperature-too-big-for-a-float",
    "classify-repeated-label-with-lone-surrogate",
    "extract-bad-schema-under-a-surrogate-key",
)


@pytest.fixture(scope="module")
def edge_case_jobs(celery_app: Any) -> Iterator[dict[str, Any]]:
    """The edge cases, sent once to the real worker at the start of the worker tests."""
    jobs = {
        name: celery_app.send_task(f"kcw.{kind}", args=[payload])
        for name, (kind, payload, _) in EDGE_CASES.items()
    }
    depth, jobs[DEEP_CASE] = deepest_sendable(celery_app, "kcw.chat")
    WORKER_FIGURES["deep case depth"] = depth
    yield jobs
    release(celery_app, list(jobs.values()))


def test_worker_fails_every_generated_bad_payload_clearly(
    celery_app: Any, worker: Worker, submit: Callable[..., Any], edge_case_jobs: dict[str, Any]
) -> None:
    sent: list[tuple[str, Any]] = []

    @generated(WORKER_EXAMPLES)
    @given(case=worker_cases())
    def send(case: tuple[str, Any]) -> None:
        name, payload = case
        kind = name.removeprefix("kcw.")
        if kind in MODELS:
            # Only payloads the worker refuses before any LLM call go out.
            with pytest.raises(InvalidJobInput):
                parse_input(MODELS[kind], kind, payload)
        sent.append((name, celery_app.send_task(name, args=[payload])))

    try:
        send()
        expected: dict[str, set[str]] = {}
        for name, payload, errors_allowed in FIXED_WORKER_CASES:
            job = celery_app.send_task(name, args=[payload])
            expected[job.id] = errors_allowed
            sent.append((name, job))
        CASES["worker"] = len(sent)

        started = time.monotonic()
        lost = wait_all([job for _, job in sent], WORKER_WAIT_S)
        waited = time.monotonic() - started
        lost_ids = {job.id for job in lost}
        problems = [
            f"{name}: {why}"
            for name, job in sent
            if job.id not in lost_ids
            and (why := unclear(name, job, expected.get(job.id))) is not None
        ]
        WORKER_FIGURES.update(
            submitted=len(sent),
            failed_clearly=len(sent) - len(lost) - len(problems),
            lost=len(lost),
            wait_s=round(waited, 1),
        )
        print(f"worker: {len(sent)} bad jobs ended in {waited:.1f}s, {len(lost)} lost")
        assert not lost, f"{len(lost)} jobs never ended: {[job.id for job in lost][:5]}"
        assert not problems, "\n".join(problems[:20])

        assert worker.alive()
        good = submit("chat", GOOD_CHAT, timeout=120)
        sent.append(("kcw.chat", good))
        assert good.successful(), good.result
        assert worker.alive()
    finally:
        release(celery_app, [job for _, job in sent])


def _wait_one(job: Any, timeout: float) -> None:
    wait_all([job], timeout)


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case_ends_as_invalid_input_in_the_worker(
    name: str, edge_case_jobs: dict[str, Any], worker: Worker
) -> None:
    job = edge_case_jobs[name]
    _wait_one(job, 30)
    assert job.state == "FAILURE", job.state
    error, message = type(job.result).__name__, str(job.result)
    assert error == "InvalidJobInput", f"{error}: {message}"
    assert worker.alive()


def test_payload_too_deep_to_decode_still_ends(
    edge_case_jobs: dict[str, Any], worker: Worker
) -> None:
    job = edge_case_jobs[DEEP_CASE]
    _wait_one(job, 3)  # the other worker tests ran meanwhile: a decodable job ended long ago
    assert job.state == "FAILURE", f"{job.state} after {WORKER_FIGURES['deep case depth']} levels"
    assert worker.alive()


@pytest.mark.parametrize("name", IN_PROCESS_EDGE_CASES)
def test_edge_case_is_invalid_input_in_process(name: str) -> None:
    kind, payload, _ = EDGE_CASES[name]
    with pytest.raises(InvalidJobInput):
        parse_input(MODELS[kind], kind, payload)


def _cli_case(
    name: str, argv: list[str], files: dict[str, bytes], error: type[BaseException], why: str
) -> Any:
    return pytest.param(argv, files, id=name)


NOT_UTF8 = "a file that is not UTF-8 raises UnicodeDecodeError, which _read_text does not catch"


CLI_EDGE_CASES = [
    _cli_case(
        "payload-nested-too-deep",
        ["submit", "chat", "--payload", "[" * 100_000],
        {},
        RecursionError,
        "json.loads raises RecursionError for JSON nested too deeply; only "
        "JSONDecodeError is turned into a usage error",
    ),
    _cli_case(
        "payload-int-over-4300-digits",
        ["submit", "chat", "--payload", '{"a": ' + "1" * 5000 + "}"],
        {},
        ValueError,
        "json.loads raises ValueError (int over 4300 digits), not JSONDecodeError",
    ),
    _cli_case(
        "payload-file-not-utf8",
        ["submit", "chat", "--payload", "@{dir}/bin.json"],
        {"bin.json": b"\xff\xfe{"},
        UnicodeDecodeError,
        NOT_UTF8,
    ),
    _cli_case(
        "text-file-not-utf8",
        ["submit", "chat", "@{dir}/bin.json"],
        {"bin.json": b"\xff\xfehi"},
        UnicodeDecodeError,
        NOT_UTF8,
    ),
    _cli_case(
        "schema-file-not-utf8",
        ["submit", "extract", "hi", "--schema", "@{dir}/bin.json"],
        {"bin.json": b"\xff\xfe{}"},
        UnicodeDecodeError,
        NOT_UTF8,
    ),
]


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


# ---------------------------------------------------------------- the count


def test_zz_at_least_a_thousand_generated_cases(record: Callable[[Row], Row]) -> None:
    total = sum(CASES.values())
    extra: dict[str, float | int | str] = {
        "in-process cases": CASES["in-process"],
        "cli cases": CASES["cli"],
        "worker cases": CASES["worker"],
        "total": total,
        "hand-picked edge cases": len(EDGE_CASES) + 1 + len(CLI_EDGE_CASES),
        "longest error message (chars)": LONGEST_MESSAGE["chars"],
        "levels of the undecodable payload": WORKER_FIGURES.get("deep case depth", 0),
    }
    record(
        Row(
            scenario="generated bad input",
            submitted=int(WORKER_FIGURES.get("submitted", 0)),
            completed=0,
            failed_clearly=int(WORKER_FIGURES.get("failed_clearly", 0)),
            lost=int(WORKER_FIGURES.get("lost", 0)),
            duplicated=0,
            note=f"{total} generated cases, 0 crashes, 0 hangs",
            extra=extra,
        )
    )
    print(f"generated bad input: {dict(CASES)}, total {total}")
    assert total >= MIN_TOTAL, f"only {total} generated cases ran: {dict(CASES)}"
