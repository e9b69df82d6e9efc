"""The generated-input tests' strategies, hand-picked cases and case counters.

The unit tier (`tests/unit/test_generated_input.py`) runs the input models and `kcw submit`
in this process; the fault tier (`tests/faults/test_generated_input.py`) sends bad jobs to a
real worker and records the row of the fault report. Both count their generated cases in
`CASES`; the fault tier's last test checks the total of every layer (see `count_unit_cases`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from worker import errors
from worker.jobs.chat import ChatInput
from worker.jobs.classify import ClassifyInput
from worker.jobs.embed import EmbedInput
from worker.jobs.extract import ExtractInput
from worker.jobs.inputs import MAX_SCHEMA_CHARS
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

IN_PROCESS_EXAMPLES = 400  # per kind; the schema and non-object tests have their own
SCHEMA_EXAMPLES = 400
NOT_AN_OBJECT_EXAMPLES = 150
CLI_EXAMPLES = 500
WORKER_EXAMPLES = 240
WORKER_WAIT_S = 180.0
MIN_TOTAL = 1000

# Generated cases run, per layer; the fault tier's last test checks the total and records it.
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


# ---------------------------------------------------------------- hand-picked cases

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


# ---------------------------------------------------------------- counting across tiers

ROOT = Path(__file__).resolve().parents[2]
UNIT_FILE = "tests/unit/test_generated_input.py"
# Where the unit file writes its counts when a fault-tier run starts it (count_unit_cases).
COUNTS_ENV = "KCW_GENERATED_COUNTS"


def write_counts() -> None:
    """Write this session's counts to the file named by KCW_GENERATED_COUNTS, if set."""
    path = os.environ.get(COUNTS_ENV)
    if path:
        found = {"cases": dict(CASES), "longest message chars": LONGEST_MESSAGE["chars"]}
        Path(path).write_text(json.dumps(found))


def count_unit_cases(tmp: Path) -> None:
    """Add the in-process and `kcw submit` cases to `CASES` when this session ran none.

    When the unit tier's file ran in this session (`make test-all`) its counts are here
    already. Otherwise (`make faults`) it runs now, in a child pytest, and its counts are
    read back, so the fault report's row always counts every layer.
    """
    if CASES["in-process"] or CASES["cli"]:
        return
    counts = tmp / "generated-counts.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", UNIT_FILE, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**os.environ, COUNTS_ENV: str(counts)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"{UNIT_FILE} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    found = json.loads(counts.read_text())
    CASES.update(found["cases"])
    LONGEST_MESSAGE["chars"] = max(LONGEST_MESSAGE["chars"], found["longest message chars"])
