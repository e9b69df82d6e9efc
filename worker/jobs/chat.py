"""`chat`: one chat completion from messages plus sampling parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from worker.jobs.inputs import Message, Sampling
from worker.jobs.kind import CliInput, Demo, JobKind, job_result
from worker.jobs.registry import register

if TYPE_CHECKING:
    from worker.llm.client import LLMClient

__all__ = ["KIND", "ChatInput", "chat"]

JSON = dict[str, Any]


class ChatInput(Sampling):
    """Input of `chat`: messages plus sampling parameters."""

    messages: list[Message] = Field(min_length=1, max_length=1000)
    # llama-server and vLLM extension: generate exactly max_tokens (benchmarks, load tests).
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _has_content(self) -> ChatInput:
        if not any(m.content.strip() for m in self.messages):
            raise ValueError("every message is empty; give at least one message some content")
        return self


def chat(client: LLMClient, inp: ChatInput) -> JSON:
    """One chat completion: text, finish reason and usage."""
    completion = client.chat(
        [m.model_dump() for m in inp.messages],
        max_tokens=inp.max_tokens,
        temperature=inp.temperature,
        top_p=inp.top_p,
        seed=inp.seed,
        stop=inp.stop,
        extra={"ignore_eos": True} if inp.ignore_eos else None,
    )
    return job_result(
        completion.model,
        completion.usage,
        text=completion.text,
        finish_reason=completion.finish_reason,
    )


def cli_payload(cli: CliInput) -> JSON:
    """`kcw submit chat TEXT [--system S] [--max-tokens N] [--temperature T]`."""
    messages = [{"role": "system", "content": cli.system}] if cli.system else []
    messages.append({"role": "user", "content": cli.text})
    extra = {"temperature": cli.temperature} if cli.temperature is not None else {}
    return {"messages": messages, **cli.sampling(), **extra}


DEMO = Demo(
    payload=lambda: {
        "messages": [{"role": "user", "content": "Name three uses of a message queue."}],
        "max_tokens": 96,
        "temperature": 0.0,
        "seed": 1,
    },
    brief=lambda payload: repr(payload["messages"][-1]["content"]),
    highlight=lambda result: str(result["text"]),
)

KIND = register(
    JobKind(
        name="chat",
        help="one chat completion",
        input_model=ChatInput,
        run=lambda ctx, inp: chat(ctx.client, inp),
        cli_payload=cli_payload,
        demo=DEMO,
        position=10,
    )
)
