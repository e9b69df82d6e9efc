"""`embed`: one embedding vector per text, where the server serves embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, field_validator

from worker.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    EmbeddingsUnsupported,
    LLMRequestRejected,
    ModelNotFound,
)
from worker.jobs.inputs import MAX_MESSAGE_CHARS, JobInput
from worker.jobs.kind import CliInput, JobKind, job_result
from worker.jobs.registry import register

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = ["KIND", "EmbedInput", "embed"]

JSON = dict[str, Any]


class EmbedInput(JobInput):
    """Input of `embed`: one text or a list of texts."""

    texts: list[Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]] = Field(
        min_length=1, max_length=2048
    )

    @field_validator("texts", mode="before")
    @classmethod
    def _one_text(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, texts: list[str]) -> list[str]:
        if any(not t.strip() for t in texts):
            raise ValueError("texts must not contain blank strings")
        return texts


def embed(client: LLMClient, inp: EmbedInput) -> JSON:
    """Embedding vectors, or a clear error when the server does not serve embeddings."""
    info = client.server_info()
    try:
        vectors, usage, model = client.embed(inp.texts)
    except LLMRequestRejected as exc:
        if isinstance(exc, ContextLengthExceeded | AuthenticationFailed | ModelNotFound):
            raise
        raise EmbeddingsUnsupported(
            f"The LLM server at {client.url} does not serve embeddings for {info.model!r} "
            f"({exc}). To enable them, {info.profile.embeddings_hint}."
        ) from exc
    return job_result(
        model, usage, embeddings=vectors, dimensions=len(vectors[0]) if vectors else 0
    )


def cli_payload(cli: CliInput) -> JSON:
    """`kcw submit embed TEXT...`: each word as typed is one text."""
    return {"texts": list(cli.words)}


KIND = register(
    JobKind(
        name="embed",
        help="embedding vectors",
        input_model=EmbedInput,
        run=lambda ctx, inp: embed(ctx.client, inp),
        cli_payload=cli_payload,
        position=50,
    )
)
