"""The registry of job kinds: each module in `worker.jobs` registers its kind once.

Every reader (the tasks, `kcw submit`'s choices, `kcw demo`, the tests) asks here,
so adding a kind is one new module in `worker/jobs/` plus its task line in `tasks/`.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Any

from worker.errors import UnknownJobKind
from worker.jobs.kind import JobKind

__all__ = ["get", "kinds", "names", "register", "unregister"]

_KINDS: dict[str, JobKind[Any]] = {}
_discovered = False
_lock = threading.Lock()


def register(kind: JobKind[Any]) -> JobKind[Any]:
    """Add a kind; a second kind under a taken name is a programming error."""
    existing = _KINDS.get(kind.name)
    if existing is not None and existing is not kind:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (for tests that register a throwaway one)."""
    _KINDS.pop(name, None)


def _discover() -> None:
    """Import every module of `worker.jobs` once, so each registers its kind."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        import worker.jobs as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        _discovered = True


def kinds() -> list[JobKind[Any]]:
    """Every registered kind, in listing order."""
    _discover()
    return sorted(_KINDS.values(), key=lambda kind: (kind.position, kind.name))


def names() -> tuple[str, ...]:
    """The names of every kind, in listing order (`kcw submit`'s choices)."""
    return tuple(kind.name for kind in kinds())


def get(name: str) -> JobKind[Any]:
    """The kind called `name`, or `UnknownJobKind` listing the known ones."""
    _discover()
    kind = _KINDS.get(name)
    if kind is None:
        raise UnknownJobKind(f"unknown job kind {name!r}; choose one of: {', '.join(names())}")
    return kind
