"""Every job kind through the whole path: Redis -> a real worker -> each real LLM server."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from worker.jobs.extract import PERSON_SCHEMA
from worker.jobs.summarize import long_document

Submit = Callable[..., Any]


@pytest.fixture()
def submit(backend_submit: Submit) -> Submit:
    """Every job test here runs against every real server: both llama.cpp engines and vLLM."""
    return backend_submit


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _usage_ok(result: dict[str, Any]) -> None:
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_returns_text_finish_reason_and_usage(submit: Submit) -> None:
    job = submit(
        "chat",
        {
            "messages": [{"role": "user", "content": "Count from one to five."}],
            "max_tokens": 24,
            "temperature": 0,
            "seed": 7,
        },
    )
    assert job.successful(), job.result
    value = job.result
    assert value["text"].strip()
    assert value["finish_reason"] in {"stop", "length"}
    assert value["model"].startswith("SmolLM2-135M-Instruct")
    assert value["usage"]["completion_tokens"] <= 24
    _usage_ok(value)


def test_chat_honours_max_tokens_with_finish_reason_length(submit: Submit) -> None:
    job = submit(
        "chat",
        {
            "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
            "max_tokens": 5,
            "temperature": 0,
        },
    )
    assert job.successful(), job.result
    assert job.result["finish_reason"] == "length"
    assert job.result["usage"]["completion_tokens"] == 5


def test_summarize_short_text_in_one_call(submit: Submit) -> None:
    text = "The council approved the new park budget after a long debate about taxes."
    job = submit("summarize", {"text": text, "max_tokens": 48})
    assert job.successful(), job.result
    assert job.result["chunks"] == 1
    assert job.result["summary"]
    _usage_ok(job.result)


def test_summarize_long_document_runs_the_chord(submit: Submit) -> None:
    document = long_document()
    assert len(document) >= 20_000
    job = submit("summarize", {"text": document, "max_tokens": 96}, timeout=600)
    assert job.successful(), job.result
    value = job.result
    assert value["chunks"] >= 2, value
    assert value["summary"].strip()
    # Usage adds up every chunk plus the combine step: more prompt tokens than one context.
    assert value["usage"]["prompt_tokens"] > 4096
    _usage_ok(value)


def test_extract_output_validates_against_the_schema(submit: Submit) -> None:
    job = submit(
        "extract",
        {
            "text": "Maria Lopez, 34, moved from Madrid to Lisbon last spring.",
            "schema": PERSON_SCHEMA,
        },
    )
    assert job.successful(), job.result
    jsonschema.validate(job.result["data"], PERSON_SCHEMA)
    assert 1 <= job.result["attempts"] <= 3
    _usage_ok(job.result)


def test_extract_accepts_the_schema_as_a_json_string(submit: Submit) -> None:
    schema = '{"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}},'
    schema += ' "required": ["color"]}'
    job = submit("extract", {"text": "The sky today is blue.", "schema": schema})
    assert job.successful(), job.result
    assert job.result["data"]["color"] in {"red", "green", "blue"}


def test_classify_returns_one_of_the_labels(submit: Submit) -> None:
    labels = ["positive", "negative", "neutral"]
    job = submit(
        "classify",
        {"text": "I love this, it works perfectly and made my day!", "labels": labels},
    )
    assert job.successful(), job.result
    assert job.result["label"] in labels
    _usage_ok(job.result)


def test_classify_with_examples_and_labels_containing_spaces(submit: Submit) -> None:
    labels = ["billing question", "bug report", "feature request"]
    job = submit(
        "classify",
        {
            "text": "The app crashes when I press save.",
            "labels": labels,
            "examples": [{"text": "I was charged twice.", "label": "billing question"}],
        },
    )
    assert job.successful(), job.result
    assert job.result["label"] in labels


def test_embed_on_a_chat_model_fails_with_how_to_enable_embeddings(
    submit: Submit, backend: str
) -> None:
    job = submit("embed", {"texts": ["hello"]})
    assert job.failed()
    assert type(job.result).__name__ == "EmbeddingsUnsupported"
    how = "EMBEDDING=true" if backend.startswith("llamacpp") else "serve an embedding model"
    assert how in str(job.result)


def test_summarize_combines_in_rounds_when_partials_do_not_fit(
    spawn_worker: Callable[..., Any], llm_server: Any
) -> None:
    # A small context (set by LLM_CONTEXT_LENGTH) makes many chunks whose partial summaries
    # no longer fit one request, so the combine step runs another chord round.
    _, submit_small = spawn_worker(llm_server.url, LLM_CONTEXT_LENGTH="512")
    document = long_document()[:16_000]
    job = submit_small("summarize", {"text": document, "max_tokens": 32}, timeout=600)
    assert job.successful(), job.result
    value = job.result
    assert value["chunks"] > 12, value
    assert value["summary"].strip()
    # Every call of every round is counted.
    assert value["usage"]["completion_tokens"] > 32 * 12


def test_embed_where_the_server_serves_embeddings(
    spawn_worker: Callable[..., Any], tmp_path_factory: Any
) -> None:
    from tests.support.processes import start_launcher

    server = start_launcher(tmp_path_factory.mktemp("embed"), EMBEDDING="true")
    try:
        _, submit_embed = spawn_worker(server.url)
        job = submit_embed(
            "embed", {"texts": ["a cat sat on the mat", "a cat sat on the mat", "x"]}
        )
        assert job.successful(), job.result
        value = job.result
        vectors = value["embeddings"]
        assert len(vectors) == 3
        assert value["dimensions"] == len(vectors[0]) > 100
        assert all(isinstance(x, float) for x in vectors[0])
        same, different = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
        assert same > 0.99
        assert different < same
        assert value["usage"]["prompt_tokens"] > 0
    finally:
        server.stop()


def test_embed_on_a_vllm_pooling_server(
    spawn_worker: Callable[..., Any], tmp_path_factory: Any
) -> None:
    from tests.support.processes import start_vllm

    server = start_vllm(tmp_path_factory.mktemp("vllm-embed"), 0, "--runner", "pooling")
    try:
        _, submit_embed = spawn_worker(server.url)
        job = submit_embed(
            "embed", {"texts": ["a cat sat on the mat", "a cat sat on the mat", "x"]}
        )
        assert job.successful(), job.result
        vectors = job.result["embeddings"]
        assert len(vectors) == 3
        assert job.result["dimensions"] == len(vectors[0]) > 100
        assert _cosine(vectors[0], vectors[1]) > 0.99
        assert _cosine(vectors[0], vectors[2]) < 0.99
    finally:
        server.stop()
