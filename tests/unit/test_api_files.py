"""The API's auth, its Files routes and its error bodies, in process (no Redis is touched)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from worker.api.app import create_app
from worker.api.auth import check_bind
from worker.config import ApiSettings
from worker.errors import SettingsError

KEY = "unit-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        overrides.setdefault("kcw_api_key", KEY)
        settings = ApiSettings(_env_file=None, kcw_data_dir=tmp_path, **overrides)  # type: ignore[call-arg]
        client = TestClient(create_app(settings, run_batches=False))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def upload(client: TestClient, content: bytes, purpose: str = "batch", **kw: Any) -> Any:
    files = {"file": ("in.jsonl", content, "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": purpose}, **kw)


def assert_openai_error(response: Any, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert error["message"]
    return error


def test_files_round_trip(make_client: MakeClient) -> None:
    client = make_client()

    created = upload(client, b'{"x": 1}\n', headers=AUTH).json()
    listed = client.get("/v1/files", headers=AUTH).json()
    content = client.get(f"/v1/files/{created['id']}/content", headers=AUTH)
    deleted = client.delete(f"/v1/files/{created['id']}", headers=AUTH).json()

    assert created["object"] == "file" and created["purpose"] == "batch" and created["bytes"] == 9
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [created["id"]]
    assert content.content == b'{"x": 1}\n'
    assert deleted == {"id": created["id"], "object": "file", "deleted": True}
    assert client.get("/v1/files", headers=AUTH).json()["data"] == []


def test_no_key_is_refused(make_client: MakeClient) -> None:
    error = assert_openai_error(make_client().get("/v1/files"), 401)

    assert error["code"] == "missing_api_key"
    assert "Authorization: Bearer" in error["message"]


def test_a_wrong_key_is_refused(make_client: MakeClient) -> None:
    response = make_client().get("/v1/files", headers={"Authorization": "Bearer nope"})

    error = assert_openai_error(response, 401)
    assert error["code"] == "invalid_api_key"
    assert "KCW_API_KEY" in error["message"]
    assert "nope" not in error["message"]


def test_no_key_is_needed_when_none_is_set_on_loopback(make_client: MakeClient) -> None:
    assert make_client(kcw_api_key="").get("/v1/files").status_code == 200


def test_serving_beyond_loopback_needs_a_key() -> None:
    settings = ApiSettings(_env_file=None, api_host="0.0.0.0")  # type: ignore[call-arg]

    with pytest.raises(SettingsError, match="KCW_API_KEY must be set"):
        check_bind(settings)
    check_bind(settings.model_copy(update={"api_host": "127.0.0.1"}))


def test_a_wrong_purpose_is_refused(make_client: MakeClient) -> None:
    error = assert_openai_error(
        upload(make_client(), b"{}\n", purpose="fine-tune", headers=AUTH), 400, "purpose"
    )

    assert "purpose='batch'" in error["message"]


def test_an_upload_without_a_file_is_refused(make_client: MakeClient) -> None:
    response = make_client().post("/v1/files", data={"purpose": "batch"}, headers=AUTH)

    error = assert_openai_error(response, 400, "file")
    assert "file" in error["message"]


def test_an_upload_over_the_limit_is_refused(make_client: MakeClient) -> None:
    client = make_client(batch_max_bytes=2048)

    error = assert_openai_error(upload(client, b"x" * 4096, headers=AUTH), 413, "file")

    assert "BATCH_MAX_BYTES" in error["message"]
    assert client.get("/v1/files", headers=AUTH).json()["data"] == []


def test_an_upload_over_the_line_limit_is_refused(make_client: MakeClient) -> None:
    client = make_client(batch_max_lines=2)

    error = assert_openai_error(upload(client, b"{}\n{}\n{}\n", headers=AUTH), 400, "file")

    assert error["code"] == "too_many_lines"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files/file-nope"),
        ("GET", "/v1/files/file-nope/content"),
        ("DELETE", "/v1/files/file-nope"),
    ],
)
def test_an_unknown_file_is_404(make_client: MakeClient, method: str, path: str) -> None:
    error = assert_openai_error(make_client().request(method, path, headers=AUTH), 404, "file_id")

    assert "file-nope" in error["message"]


def test_an_unknown_route_is_404_in_openais_shape(make_client: MakeClient) -> None:
    error = assert_openai_error(make_client().get("/v1/nothing", headers=AUTH), 404)

    assert "/docs" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input_file_id": "file-x", "endpoint": "/v1/responses"}, "endpoint"),
        (
            {"input_file_id": "file-x", "endpoint": "/v1/embeddings", "completion_window": "1h"},
            "completion_window",
        ),
        ({"input_file_id": "file-x", "endpoint": "/v1/embeddings"}, "input_file_id"),
        ({"endpoint": "/v1/embeddings"}, "input_file_id"),
    ],
)
def test_a_bad_batch_request_is_refused_before_anything_is_stored(
    make_client: MakeClient, body: dict[str, Any], param: str
) -> None:
    response = make_client().post("/v1/batches", json=body, headers=AUTH)

    assert_openai_error(response, 400, param)


def test_the_docs_are_served(make_client: MakeClient) -> None:
    client = make_client()

    assert client.get("/docs").status_code == 200
    assert "/v1/batches" in client.get("/openapi.json").json()["paths"]


def test_kcw_batch_finds_the_api_from_the_settings() -> None:
    def url(**overrides: Any) -> str:
        return ApiSettings(_env_file=None, **overrides).api_url  # type: ignore[call-arg]

    assert url() == "http://127.0.0.1:8100"
    assert url(api_host="0.0.0.0", api_port=9000, kcw_api_key="k") == "http://127.0.0.1:9000"
    assert url(kcw_api_url="http://api.example:8100/v1/") == "http://api.example:8100"


def test_the_placeholder_key_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        ApiSettings(_env_file=None, kcw_api_key="changeme")  # type: ignore[call-arg]
