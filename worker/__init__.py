"""kc-worker: background LLM jobs through Celery and Redis, served by llama.cpp or vLLM.

`worker.app` (the Celery app) is loaded on first use, so `import worker.config` or
`kcw submit` do not pay for the worker's imports; `celery -A worker` finds it here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        import importlib

        module = importlib.import_module("worker.app")
        # Importing the submodule set `worker.app` to the module; the name means the Celery app.
        globals()["app"] = module.app
        return module.app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
