"""`kcw batch`'s client for `kcw serve`: the Files and Batch routes over httpx.

Errors come back as OpenAI's error bodies and are raised as our `ApiError` classes,
so `kcw` prints their message in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from worker.config import ApiSettings
from worker.errors import (
    ApiError,
    ApiUnavailable,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)

__all__ = ["BatchApi"]

JSON = dict[str, Any]
# The error class for each status `kcw serve` answers with, read from the classes themselves.
ERRORS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (InvalidRequest, Unauthorized, NotFound, Conflict, PayloadTooLarge, ApiUnavailable)
}


class BatchApi:
    """The routes `kcw batch` uses, with KCW_API_KEY as the Bearer key."""

    def __init__(self, settings: ApiSettings, transport: httpx.BaseTransport | None = None) -> None:
        key = settings.kcw_api_key.get_secret_value()
        self.url = settings.api_url
        self.http = httpx.Client(
            base_url=f"{self.url}/v1",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(600.0, connect=5.0),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> BatchApi:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnavailable(
                f"kcw serve is not answering at {self.url} ({type(exc).__name__}): start it with "
                "`kcw serve` (or `make api`), or set KCW_API_URL."
            ) from None
        if response.is_error:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        data: JSON = self._send(method, path, **kwargs).json()
        return data

    def upload(self, path: Path) -> JSON:
        with path.open("rb") as source:
            files = {"file": (path.name, source, "application/jsonl")}
            return self._json("POST", "/files", files=files, data={"purpose": "batch"})

    def create(self, file_id: str, endpoint: str, metadata: dict[str, str] | None = None) -> JSON:
        body: JSON = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
        if metadata:
            body["metadata"] = metadata
        return self._json("POST", "/batches", json=body)

    def batch(self, batch_id: str) -> JSON:
        return self._json("GET", f"/batches/{batch_id}")

    def batches(self, limit: int) -> list[JSON]:
        data: list[JSON] = self._json("GET", "/batches", params={"limit": limit})["data"]
        return data

    def cancel(self, batch_id: str) -> JSON:
        return self._json("POST", f"/batches/{batch_id}/cancel")

    def content(self, file_id: str) -> bytes:
        return self._send("GET", f"/files/{file_id}/content").content


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        error = body["error"]
        message, param, code = str(error["message"]), error.get("param"), error.get("code")
    except (ValueError, KeyError, TypeError):
        message, param, code = f"HTTP {response.status_code}: {response.text[:300]}", None, None
    cls = ERRORS.get(response.status_code, ApiError)
    exc = cls(message, param, code)
    exc.status = response.status_code
    return exc
