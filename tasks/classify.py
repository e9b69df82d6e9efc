"""`kcw.classify`: exactly one label out of a caller's list."""

from __future__ import annotations

from typing import Any

from tasks.base import LLMTask
from worker import jobs
from worker.app import app
from worker.config import get_settings
from worker.inputs import ClassifyInput, parse_input
from worker.runtime import get_client


@app.task(bind=True, base=LLMTask, name="kcw.classify")
def classify(self: LLMTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Text plus labels in; one of the labels and usage out."""
    inp = parse_input(ClassifyInput, "classify", payload)
    return jobs.classify(get_client(), inp, get_settings().extract_max_attempts)
