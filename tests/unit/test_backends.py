"""Backend profiles: request shapes per server, choice parsing, detection, context length."""

from __future__ import annotations

import json

import jsonschema
import pytest

from worker.llm.backends import (
    LLAMA_CPP_PYTHON,
    LLAMA_SERVER,
    PROFILES,
    detect_backend,
    label_schema,
)

LLAMACPP = PROFILES["llamacpp"]
VLLM = PROFILES["vllm"]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_llamacpp_schema_request_uses_json_object_with_schema() -> None:
    assert LLAMACPP.schema_request(SCHEMA) == {
        "response_format": {"type": "json_object", "schema": SCHEMA}
    }


def test_vllm_schema_request_uses_openai_json_schema() -> None:
    assert VLLM.schema_request(SCHEMA) == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": SCHEMA},
        }
    }


def test_vllm_choice_request_uses_structured_outputs_choice() -> None:
    assert VLLM.choice_request(["spam", "ham"]) == {
        "extra_body": {"structured_outputs": {"choice": ["spam", "ham"]}}
    }


def test_llamacpp_choice_request_is_a_schema_of_one_label() -> None:
    request = LLAMACPP.choice_request(["spam", "ham"])

    assert request == {
        "response_format": {"type": "json_object", "schema": label_schema(["spam", "ham"])}
    }


def test_label_schema_admits_exactly_one_known_label() -> None:
    validator = jsonschema.Draft202012Validator(label_schema(["spam", "ham"]))

    assert validator.is_valid({"label": "spam"})
    assert not validator.is_valid({"label": "eggs"})
    assert not validator.is_valid({"label": "spam", "why": "because"})
    assert not validator.is_valid({})
    assert not validator.is_valid("spam")


@pytest.mark.parametrize(
    ("text", "label"),
    [('{"label": "spam"}', "spam"), (' {"label":"ham"}\n', "ham"), ('"spam"', "spam")],
)
def test_llamacpp_parse_choice_reads_the_json_label(text: str, label: str) -> None:
    assert LLAMACPP.parse_choice(text) == label


@pytest.mark.parametrize(("text", "error"), [("spam", ValueError), ('{"name": "spam"}', KeyError)])
def test_llamacpp_parse_choice_refuses_other_answers(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        LLAMACPP.parse_choice(text)


def test_vllm_parse_choice_takes_the_bare_text() -> None:
    assert VLLM.parse_choice(" ham\n") == "ham"


@pytest.mark.parametrize(
    ("payload", "backend"),
    [
        ({"data": [{"id": "m", "owned_by": "vllm", "max_model_len": 2048}]}, "vllm"),
        ({"data": [{"id": "m", "owned_by": "me"}]}, "llamacpp"),
        ({"data": [{"id": "a", "owned_by": "me"}, {"id": "b", "owned_by": "vllm"}]}, "vllm"),
        ({"data": []}, "llamacpp"),
        ({"data": None}, "llamacpp"),
        ({}, "llamacpp"),
        ({"data": ["not-an-object"]}, "llamacpp"),
    ],
)
def test_detect_backend_from_models_payload(payload: dict[str, object], backend: str) -> None:
    assert detect_backend(payload) == backend


@pytest.mark.parametrize(
    ("entry", "props", "expected"),
    [
        ({"id": "m", "max_model_len": 8192}, None, 8192),
        ({"id": "m", "context_length": 1024}, None, 1024),
        ({"id": "m"}, {"default_generation_settings": {"n_ctx": 4096}}, 4096),
        ({"id": "m"}, {"n_ctx": 2048}, 2048),
        (
            {"id": "m", "max_model_len": 8192},
            {"default_generation_settings": {"n_ctx": 4096}},
            8192,
        ),
        ({"id": "m", "max_model_len": 0}, {"default_generation_settings": {"n_ctx": 512}}, 512),
        ({"id": "m"}, {"default_generation_settings": {"n_ctx": "4096"}}, None),
        ({"id": "m"}, {}, None),
        ({"id": "m"}, None, None),
    ],
)
def test_context_length_from_models_entry_or_props(
    entry: dict[str, object], props: dict[str, object] | None, expected: int | None
) -> None:
    for profile in (LLAMACPP, VLLM):
        assert profile.context_length(entry, props) == expected


def test_tokenize_bodies_follow_each_server() -> None:
    assert LLAMACPP.tokenize_body("hi", "m", LLAMA_CPP_PYTHON) == {"model": "m", "input": "hi"}
    assert LLAMACPP.tokenize_body("hi", "m", LLAMA_SERVER) == {
        "content": "hi",
        "add_special": False,
    }
    assert VLLM.tokenize_body("hi", "m", None) == {
        "model": "m",
        "prompt": "hi",
        "add_special_tokens": False,
    }


def test_profiles_name_their_routes() -> None:
    assert LLAMACPP.tokenize_path(LLAMA_CPP_PYTHON) == "/extras/tokenize"
    assert LLAMACPP.tokenize_path(LLAMA_SERVER) == "/tokenize"
    assert VLLM.tokenize_path(None) == "/tokenize"
    assert LLAMACPP.health_path == VLLM.health_path == "/health"
    assert "EMBEDDING=true" in LLAMACPP.embeddings_hint
    assert "embed" in VLLM.embeddings_hint


def test_schema_request_is_json_serialisable() -> None:
    for profile in (LLAMACPP, VLLM):
        assert json.loads(json.dumps(profile.schema_request(SCHEMA))) == profile.schema_request(
            SCHEMA
        )


@pytest.mark.parametrize(
    ("props", "capacity", "engine"),
    [
        (None, None, LLAMA_CPP_PYTHON),
        ({"total_slots": 1}, 1, LLAMA_CPP_PYTHON),
        ({"total_slots": 8, "build_info": "b1-abc"}, 8, LLAMA_SERVER),
        ({"total_slots": 0, "build_info": "b1"}, None, LLAMA_SERVER),
        ({"total_slots": "8"}, None, LLAMA_CPP_PYTHON),
    ],
)
def test_capacity_and_engine_from_props(
    props: dict[str, object] | None, capacity: int | None, engine: str
) -> None:
    assert LLAMACPP.capacity(props) == capacity
    assert LLAMACPP.engine(props) == engine
    assert VLLM.engine(props) is None
