"""`kcw.chat`: one chat completion."""

from __future__ import annotations

from typing import Any

from tasks.base import LLMTask
from worker import jobs
from worker.app import app
from worker.inputs import ChatInput, parse_input
from worker.runtime import get_client


@app.task(bind=True, base=LLMTask, name="kcw.chat")
def chat(self: LLMTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Messages plus sampling parameters in; text, finish reason and usage out."""
    inp = parse_input(ChatInput, "chat", payload)
    return jobs.chat(get_client(), inp)
