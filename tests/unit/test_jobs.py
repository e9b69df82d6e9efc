"""Job logic against a fake llama.cpp or vLLM server: retries on bad output, chunking, errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    EmbeddingsUnsupported,
    LLMRequestRejected,
    LLMResponseInvalid,
)
from worker.jobs import chat, classify, embed, extract, summarize
from worker.jobs.chat import ChatInput
from worker.jobs.classify import ClassifyInput
from worker.jobs.embed import EmbedInput
from worker.jobs.extract import ExtractInput
from worker.jobs.kind import SHOWN_OUTPUT_CHARS

if TYPE_CHECKING:
    from tests.unit.conftest import ClientFactory, FakeServer, ServerFactory

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
LABELS = ["spam", "ham"]
# What llama-cpp-python answers when the model was loaded without embedding=True.
NO_EMBEDDINGS_500 = {
    "error": {
        "message": "Llama model must be created with embedding=True to call this method",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}


def extract_input(**fields: Any) -> ExtractInput:
    return ExtractInput.model_validate(
        {"text": "Ada Lovelace wrote notes.", "schema": SCHEMA, **fields}
    )


def classify_input() -> ClassifyInput:
    return ClassifyInput.model_validate({"text": "Win a free prize now!", "labels": LABELS})


def last_user_message(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def tokenizer(chars_per_token: int, shape: str = "tokens") -> Any:
    """A tokenize route that counts one token per `chars_per_token` characters of input."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        count = len(body.get("input") or body.get("prompt") or "") // chars_per_token
        payload = {"tokens": list(range(count))} if shape == "tokens" else {"count": count}
        return httpx.Response(200, json=payload)

    return answer


def document(paragraphs: int, sentences: int = 12) -> str:
    para = " ".join(f"Sentence {i} of this paragraph carries a fact." for i in range(sentences))
    return "\n\n".join(f"Paragraph {p}. {para}" for p in range(paragraphs))


# --- chat -------------------------------------------------------------------------------------


def test_chat_job_returns_text_finish_reason_model_and_usage(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().answer("Hi!", prompt_tokens=4, completion_tokens=2)
    inp = ChatInput.model_validate(
        {"messages": [{"role": "user", "content": "Hello"}], "top_p": 0.9}
    )

    result = chat.chat(make_client(server), inp)

    llm_seconds = result["usage"].pop("llm_seconds")
    assert result == {
        "text": "Hi!",
        "finish_reason": "stop",
        "model": "smollm2",
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    assert 0 < llm_seconds < 5
    [body] = server.bodies("POST", CHAT)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (256, 0.7, 0.9)


@pytest.mark.parametrize(("given", "sent"), [({"ignore_eos": True}, True), ({}, None)])
def test_chat_sends_ignore_eos_only_when_asked(
    make_server: ServerFactory, make_client: ClientFactory, given: dict[str, Any], sent: Any
) -> None:
    server = make_server().answer("Hi!")
    inp = ChatInput.model_validate({"messages": [{"role": "user", "content": "Hi"}], **given})

    chat.chat(make_client(server), inp)

    [body] = server.bodies("POST", CHAT)
    assert body.get("ignore_eos") is sent


def test_chat_refuses_an_ignore_eos_that_is_not_a_boolean() -> None:
    with pytest.raises(ValueError, match="ignore_eos"):
        ChatInput.model_validate({"messages": [{"role": "user", "content": "Hi"}], "ignore_eos": 1})


# --- extract ----------------------------------------------------------------------------------


def test_extract_sends_llamacpp_json_object_with_the_schema(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer('{"name": "Ada"}')

    result = extract.extract(make_client(server), extract_input(), max_attempts=3)

    assert result["data"] == {"name": "Ada"}
    assert result["attempts"] == 1
    [body] = server.bodies("POST", CHAT)
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert body["temperature"] == 0.0


def test_extract_sends_vllm_json_schema(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm").answer('{"name": "Ada"}')

    extract.extract(make_client(server), extract_input(), max_attempts=3)

    [body] = server.bodies("POST", CHAT)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA},
    }


def test_extract_asks_again_after_invalid_output_then_succeeds(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().answer("Sure! Here it is", '{"name": 5}', '{"name": "Ada"}')

    result = extract.extract(make_client(server), extract_input(), max_attempts=3)

    assert result["data"] == {"name": "Ada"}
    assert result["attempts"] == 3
    assert result["usage"]["llm_seconds"] > 0  # the three calls' time, summed
    del result["usage"]["llm_seconds"]
    assert result["usage"] == {"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45}
    first, second, third = server.bodies("POST", CHAT)
    assert last_user_message(first) == "Ada Lovelace wrote notes."
    assert last_user_message(second).startswith("Your last answer was invalid: not JSON")
    assert "at name: 5 is not of type 'string'" in last_user_message(third)


def test_extract_says_when_the_answer_was_cut_off(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server()
    server.answer('{"name": "Ad', finish_reason="length")
    server.answer('{"name": "Ada"}')

    extract.extract(make_client(server), extract_input(), max_attempts=2)

    second = server.bodies("POST", CHAT)[1]
    assert "the answer was cut off at max_tokens" in last_user_message(second)


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_extract_gives_up_after_max_attempts_with_the_last_output(
    make_server: ServerFactory, make_client: ClientFactory, max_attempts: int
) -> None:
    server = make_server().answer('{"name": 5}')

    with pytest.raises(LLMResponseInvalid) as caught:
        extract.extract(make_client(server), extract_input(), max_attempts=max_attempts)

    error = caught.value
    assert error.last_output == '{"name": 5}'
    assert error.args[1] == '{"name": 5}'
    assert f"after {max_attempts} attempts (EXTRACT_MAX_ATTEMPTS)" in str(error)
    assert "at name: 5 is not of type 'string'" in str(error)
    assert len(server.calls("POST", CHAT)) == max_attempts


def test_extract_keeps_only_the_start_of_a_huge_last_output(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().answer("x" * 10_000)

    with pytest.raises(LLMResponseInvalid) as caught:
        extract.extract(make_client(server), extract_input(), max_attempts=1)

    assert caught.value.last_output == "x" * SHOWN_OUTPUT_CHARS


# --- classify ---------------------------------------------------------------------------------


def test_classify_on_llamacpp_returns_a_label_from_the_list(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer('{"label": "spam"}')

    result = classify.classify(make_client(server), classify_input(), max_attempts=3)

    assert result["label"] == "spam"
    assert result["model"] == "smollm2"
    [body] = server.bodies("POST", CHAT)
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["properties"]["label"]["enum"] == LABELS


def test_classify_on_vllm_sends_structured_outputs_choice(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm").answer("ham")

    result = classify.classify(make_client(server), classify_input(), max_attempts=3)

    assert result["label"] == "ham"
    [body] = server.bodies("POST", CHAT)
    assert body["structured_outputs"] == {"choice": LABELS}
    assert "response_format" not in body


def test_classify_asks_again_after_an_unparseable_answer(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer("spam!", '{"label": "ham"}')

    result = classify.classify(make_client(server), classify_input(), max_attempts=3)

    assert result["label"] == "ham"
    assert result["usage"]["total_tokens"] == 30
    assert len(server.calls("POST", CHAT)) == 2


@pytest.mark.parametrize(
    ("backend", "answer"), [("llamacpp", '{"label": "eggs"}'), ("vllm", "eggs")]
)
def test_classify_raises_when_the_model_keeps_answering_outside_the_labels(
    make_server: ServerFactory, make_client: ClientFactory, backend: str, answer: str
) -> None:
    server = make_server(backend).answer(answer)

    with pytest.raises(LLMResponseInvalid) as caught:
        classify.classify(make_client(server), classify_input(), max_attempts=2)

    assert caught.value.last_output == answer
    assert "['spam', 'ham']" in str(caught.value)
    assert "after 2 attempts" in str(caught.value)
    assert len(server.calls("POST", CHAT)) == 2


# --- summarize --------------------------------------------------------------------------------


def test_long_text_is_split_into_chunks_sized_from_n_ctx_and_the_tokenizer(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=1024).add("POST", "/extras/tokenize", tokenizer(4))
    text = document(paragraphs=40)

    plan = summarize.plan_summary(make_client(server), text, summary_tokens=128)

    # (1024 - 128 summary - 96 prompt) * 0.85 = 680 tokens, at 4 chars per token.
    assert plan.context_length == 1024
    assert plan.chunk_chars == 680 * 4
    assert len(plan.chunks) > 5
    assert all(len(chunk) <= plan.chunk_chars for chunk in plan.chunks)
    assert "".join("".join(plan.chunks).split()) == "".join(text.split())
    assert all(chunk.startswith("Paragraph ") for chunk in plan.chunks)
    assert server.bodies("POST", "/extras/tokenize") == [{"model": "smollm2", "input": text[:4000]}]


def test_token_count_may_come_as_a_count_field(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=1024)
    server.add("POST", "/extras/tokenize", tokenizer(2, shape="count"))

    plan = summarize.plan_summary(make_client(server), document(paragraphs=40), summary_tokens=128)

    assert plan.chunk_chars == 680 * 2


def test_vllm_chunks_are_sized_from_max_model_len(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm", max_model_len=2048).add("POST", "/tokenize", tokenizer(4, "count"))

    plan = summarize.plan_summary(make_client(server), document(paragraphs=40), summary_tokens=256)

    assert plan.context_length == 2048
    assert plan.chunk_chars == int((2048 - 256 - 96) * 0.85) * 4


def test_without_a_tokenizer_route_a_conservative_ratio_is_used(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=1024)  # /extras/tokenize answers 404

    plan = summarize.plan_summary(make_client(server), document(paragraphs=40), summary_tokens=128)

    assert plan.chunk_chars == int(680 * summarize.FALLBACK_CHARS_PER_TOKEN)
    assert len(plan.chunks) > 5


def test_unknown_context_falls_back_to_2048(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=None).add("POST", "/extras/tokenize", tokenizer(4))

    plan = summarize.plan_summary(make_client(server), document(paragraphs=2), summary_tokens=128)

    assert plan.context_length == summarize.FALLBACK_CONTEXT


def test_short_text_is_a_single_chunk(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=4096).add("POST", "/extras/tokenize", tokenizer(4))
    text = "A short memo. It fits easily."

    plan = summarize.plan_summary(make_client(server), text, summary_tokens=256)

    assert plan.chunks == [text]


def test_context_too_small_for_any_chunk_is_refused(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp", n_ctx=256).add("POST", "/extras/tokenize", tokenizer(4))

    with pytest.raises(ContextLengthExceeded) as caught:
        summarize.plan_summary(make_client(server), document(paragraphs=2), summary_tokens=128)

    assert "(256 tokens)" in str(caught.value)
    assert "SUMMARY_MAX_TOKENS" in str(caught.value)
    assert "N_CTX" in str(caught.value)
    assert server.calls("POST", CHAT) == []


def test_summarize_part_names_the_part_and_strips_the_summary(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().answer("  The gist.\n")

    result = summarize.summarize_part(
        make_client(server), "chunk text", max_tokens=64, instructions="Be brief.", part=(2, 5)
    )

    assert result["summary"] == "The gist."
    [body] = server.bodies("POST", CHAT)
    assert "part 2 of 5 of a longer document. Be brief." in last_user_message(body)
    assert last_user_message(body).endswith("chunk text")
    assert body["max_tokens"] == 64


def test_combine_summaries_lists_the_parts_in_order(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().answer("All of it.")

    result = summarize.combine_summaries(
        make_client(server), ["first", "second"], max_tokens=64, instructions=None
    )

    assert result["summary"] == "All of it."
    [body] = server.bodies("POST", CHAT)
    assert last_user_message(body).endswith("\n\nfirst\n\nsecond")


# --- embed ------------------------------------------------------------------------------------


def embeddings_reply(server: FakeServer, vectors: list[list[float]]) -> None:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    server.reply(
        "POST",
        EMBEDDINGS,
        200,
        {
            "object": "list",
            "data": data,
            "model": "smollm2",
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        },
    )


def test_embed_returns_vectors_and_dimensions(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm")
    embeddings_reply(server, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])

    result = embed.embed(make_client(server), EmbedInput(texts=["a", "b"]))

    assert result["embeddings"] == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    assert result["dimensions"] == 3
    assert result["usage"]["prompt_tokens"] == 4


def test_llamacpp_without_embedding_mode_is_embeddings_unsupported_with_a_fix(
    make_server: ServerFactory, make_client: ClientFactory, sleeps: list[float]
) -> None:
    server = make_server("llamacpp").reply("POST", EMBEDDINGS, 500, NO_EMBEDDINGS_500)

    with pytest.raises(EmbeddingsUnsupported) as caught:
        embed.embed(make_client(server), EmbedInput(texts=["a"]))

    message = str(caught.value)
    assert "does not serve embeddings for 'smollm2'" in message
    assert "Llama model must be created with embedding=True" in message
    assert "To enable them, set EMBEDDING=true for the llama.cpp server" in message
    assert isinstance(caught.value, LLMRequestRejected)
    assert len(server.calls("POST", EMBEDDINGS)) == 1
    assert sleeps == []


def test_vllm_generation_model_is_embeddings_unsupported_with_a_fix(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("vllm").reply(
        "POST",
        EMBEDDINGS,
        400,
        {"object": "error", "message": "The model does not support Embeddings API", "code": 400},
    )

    with pytest.raises(EmbeddingsUnsupported, match="--runner pooling"):
        embed.embed(make_client(server), EmbedInput(texts=["a"]))


@pytest.mark.parametrize("status", [401, 403])
def test_embed_auth_failure_stays_authentication_failed(
    make_server: ServerFactory, make_client: ClientFactory, status: int
) -> None:
    server = make_server().reply("POST", EMBEDDINGS, status, {"detail": "Invalid API key"})

    with pytest.raises(AuthenticationFailed, match="LLM_API_KEY"):
        embed.embed(make_client(server), EmbedInput(texts=["a"]))


def test_embed_too_long_stays_context_length_exceeded(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server().reply(
        "POST", EMBEDDINGS, 400, {"error": {"message": "input exceeds maximum context length"}}
    )

    with pytest.raises(ContextLengthExceeded):
        embed.embed(make_client(server), EmbedInput(texts=["a"]))
