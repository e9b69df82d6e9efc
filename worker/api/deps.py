"""What the routes share: settings, the file store and the batch store, on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from worker.batches.files import FileStore
from worker.batches.store import BatchStore
from worker.config import ApiSettings

__all__ = ["Services"]


@dataclass(frozen=True)
class Services:
    settings: ApiSettings
    files: FileStore
    batches: BatchStore

    @staticmethod
    def of(request: Request) -> Services:
        services: Services = request.app.state.services
        return services
