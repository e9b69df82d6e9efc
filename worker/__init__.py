"""kc-worker: background LLM jobs through Celery and Redis, served by llama.cpp or vLLM."""

from worker.app import app

__all__ = ["app"]
__version__ = "0.1.0"
