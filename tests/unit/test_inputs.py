"""Job inputs: every bad input is InvalidJobInput naming the field; good inputs parse."""

from __future__ import annotations

import json
from typing import Any

import pytest

from worker.errors import InvalidJobInput, LLMRequestRejected
from worker.jobs.chat import ChatInput
from worker.jobs.classify import ClassifyInput
from worker.jobs.embed import EmbedInput
from worker.jobs.extract import ExtractInput
from worker.jobs.inputs import parse_input
from worker.jobs.summarize import SummarizeInput

HELLO = [{"role": "user", "content": "Hello"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def invalid(model: type[Any], payload: Any, job: str = "job") -> str:
    """The message of the InvalidJobInput that `payload` must raise."""
    with pytest.raises(InvalidJobInput) as caught:
        parse_input(model, job, payload)
    return str(caught.value)


def nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


# --- chat -------------------------------------------------------------------------------------


def test_chat_input_parses_with_defaults() -> None:
    inp = parse_input(ChatInput, "chat", {"messages": HELLO})

    assert [m.model_dump() for m in inp.messages] == HELLO
    assert (inp.max_tokens, inp.temperature, inp.top_p, inp.seed, inp.stop) == (
        256,
        0.7,
        None,
        None,
        None,
    )


def test_integer_temperature_and_top_p_are_accepted_as_floats() -> None:
    inp = parse_input(ChatInput, "chat", {"messages": HELLO, "temperature": 1, "top_p": 1})

    assert inp.temperature == 1.0
    assert isinstance(inp.temperature, float)
    assert inp.top_p == 1.0


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        ({"messages": []}, "messages", "at least 1 item"),
        ({}, "messages", "Field required"),
        ({"messages": "Hello"}, "messages", "valid list"),
        ({"messages": HELLO, "max_tokens": "10"}, "max_tokens", "valid integer"),
        ({"messages": HELLO, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": HELLO, "max_tokens": True}, "max_tokens", "valid integer"),
        ({"messages": HELLO, "temperature": "hot"}, "temperature", "valid number"),
        ({"messages": HELLO, "temperature": True}, "temperature", "valid number"),
        ({"messages": HELLO, "temperature": 3.5}, "temperature", "less than or equal to 2"),
        ({"messages": HELLO, "stop": "\n"}, "stop", "valid list"),
        ({"messages": HELLO, "model": "gpt-4"}, "model", "Extra inputs are not permitted"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "'system'"),
        ({"messages": [{"role": "user"}]}, "messages.0.content", "Field required"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "valid string"),
    ],
)
def test_bad_chat_input_names_the_field(payload: Any, field: str, problem: str) -> None:
    message = invalid(ChatInput, payload, "chat")

    assert message.startswith("Invalid input for chat: ")
    assert f"{field}: " in message
    assert problem in message


def test_chat_with_only_blank_messages_is_refused() -> None:
    message = invalid(ChatInput, {"messages": [{"role": "user", "content": "  \n"}]})

    assert "every message is empty" in message


def test_every_problem_is_listed() -> None:
    message = invalid(ChatInput, {"messages": [], "max_tokens": "10", "colour": "blue"})

    assert "messages: " in message
    assert "max_tokens: " in message
    assert "colour: Extra inputs are not permitted" in message


@pytest.mark.parametrize("payload", [["messages"], "chat", None, 42])
def test_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    message = invalid(ChatInput, payload, "chat")

    assert message == (
        f"Invalid input for chat: expected a JSON object, got {type(payload).__name__}"
    )


def test_invalid_job_input_is_never_retried() -> None:
    assert issubclass(InvalidJobInput, LLMRequestRejected)


# --- extract ----------------------------------------------------------------------------------


def test_schema_given_as_a_json_string_is_parsed() -> None:
    inp = parse_input(ExtractInput, "extract", {"text": "Ada", "schema": json.dumps(SCHEMA)})

    assert inp.json_schema == SCHEMA
    assert inp.max_tokens == 512


def test_schema_given_as_an_object_is_kept() -> None:
    inp = parse_input(ExtractInput, "extract", {"text": "Ada", "schema": SCHEMA})

    assert inp.json_schema == SCHEMA


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ("{not json", "schema: schema is not valid JSON"),
        ('{"type": 12}', "schema: schema is not a valid JSON Schema at type"),
        ({"type": 12}, "schema: schema is not a valid JSON Schema at type"),
        ({"properties": {"x": {"minLength": -1}}}, "at properties/x/minLength"),
        ("[1, 2]", "schema: schema must be a JSON object, not list"),
        ([{"type": "object"}], "schema: schema must be a JSON object, not list"),
        ('"object"', "schema: schema must be a JSON object, not str"),
        (12, "schema: schema must be a JSON object, not int"),
    ],
)
def test_bad_schema_is_refused_naming_schema(schema: Any, problem: str) -> None:
    message = invalid(ExtractInput, {"text": "Ada", "schema": schema}, "extract")

    assert problem in message


def test_oversized_schema_string_is_refused() -> None:
    schema = json.dumps({"description": "x" * 200_000})

    assert "schema is longer than 100000 characters" in invalid(
        ExtractInput, {"text": "Ada", "schema": schema}
    )


def test_extract_without_schema_names_schema() -> None:
    assert "schema: Field required" in invalid(ExtractInput, {"text": "Ada"})


def test_deeply_nested_schema_says_it_is_nested_too_deeply() -> None:
    message = invalid(ExtractInput, {"text": "Ada", "schema": nested(50_000)}, "extract")

    assert message.startswith("Invalid input for extract: schema.")
    assert message.endswith("is nested more than 64 levels deep")
    assert len(message) < 200


def test_deeply_nested_value_where_a_string_belongs_names_the_field() -> None:
    payload = {"messages": [{"role": "user", "content": nested(50_000)}]}

    message = invalid(ChatInput, payload)
    assert message.startswith("Invalid input for job: messages.0.content.")
    assert "nested more than 64 levels deep" in message


# --- classify ---------------------------------------------------------------------------------


def test_classify_input_strips_labels() -> None:
    inp = parse_input(
        ClassifyInput,
        "classify",
        {
            "text": "Win a prize!",
            "labels": [" spam", "ham "],
            "examples": [{"text": "Lunch?", "label": "ham"}],
        },
    )

    assert inp.labels == ["spam", "ham"]
    assert inp.examples[0].label == "ham"


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        (["spam"], "labels: List should have at least 2 items"),
        ([], "labels: List should have at least 2 items"),
        (["spam", "spam"], "labels: labels repeat: spam"),
        (["spam", " spam "], "labels: labels repeat: spam"),
        (["spam", "  "], "labels: labels must not be blank"),
        (["spam", "x" * 201], "labels: labels must be at most 200 characters"),
        ("spam,ham", "labels: Input should be a valid list"),
        (["spam", 3], "labels.1: Input should be a valid string"),
    ],
)
def test_bad_labels_are_refused_naming_labels(labels: Any, problem: str) -> None:
    assert problem in invalid(ClassifyInput, {"text": "hi", "labels": labels})


def test_examples_with_an_unknown_label_are_refused() -> None:
    message = invalid(
        ClassifyInput,
        {
            "text": "hi",
            "labels": ["spam", "ham"],
            "examples": [{"text": "a", "label": "eggs"}, {"text": "b", "label": "ham"}],
        },
    )

    assert "examples use unknown labels ['eggs']" in message
    assert "['spam', 'ham']" in message


def test_example_without_text_names_the_example() -> None:
    message = invalid(
        ClassifyInput,
        {"text": "hi", "labels": ["spam", "ham"], "examples": [{"text": "", "label": "ham"}]},
    )

    assert "examples.0.text: " in message


# --- summarize and embed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"), [("", "at least 1 character"), ("   \n\t", "text is blank")]
)
def test_blank_summarize_text_is_refused(text: str, problem: str) -> None:
    message = invalid(SummarizeInput, {"text": text}, "summarize")

    assert "text: " in message
    assert problem in message


def test_summarize_max_tokens_has_a_floor() -> None:
    assert "max_tokens: " in invalid(SummarizeInput, {"text": "doc", "max_tokens": 8})


def test_summarize_input_parses() -> None:
    inp = parse_input(SummarizeInput, "summarize", {"text": "A long doc.", "max_tokens": 64})

    assert (inp.text, inp.max_tokens, inp.instructions) == ("A long doc.", 64, None)


def test_embed_accepts_one_text_or_a_list() -> None:
    assert parse_input(EmbedInput, "embed", {"texts": "one"}).texts == ["one"]
    assert parse_input(EmbedInput, "embed", {"texts": ["a", "b"]}).texts == ["a", "b"]


@pytest.mark.parametrize(
    ("texts", "problem"),
    [
        (" ", "texts: texts must not contain blank strings"),
        (["a", ""], "texts: texts must not contain blank strings"),
        ([], "texts: List should have at least 1 item"),
        ([1, 2], "texts.0: Input should be a valid string"),
    ],
)
def test_bad_embed_texts_are_refused_naming_texts(texts: Any, problem: str) -> None:
    assert problem in invalid(EmbedInput, {"texts": texts}, "embed")
