"""Every LLM request names the job and the run of it that made it (`worker.tracing`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker import tracing

if TYPE_CHECKING:
    from tests.unit.conftest import ClientFactory, ServerFactory

HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


def test_requests_inside_a_job_carry_its_id_and_one_execution_id_per_run(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer("one", "two", "three")
    client = make_client(server)

    with tracing.running_job("job-1") as first:
        client.chat(HI, max_tokens=3)
        client.chat(HI, max_tokens=3)
    with tracing.running_job("job-1") as second:
        client.chat(HI, max_tokens=3)

    sent = [
        (r.headers.get("x-request-id"), r.headers.get("x-kcw-execution"))
        for r in server.calls("POST", CHAT)
    ]
    assert sent == [("job-1", first), ("job-1", first), ("job-1", second)]
    assert first != second


def test_requests_outside_a_job_carry_no_job_headers(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    server = make_server("llamacpp").answer("hello")
    make_client(server).chat(HI, max_tokens=3)

    (request,) = server.calls("POST", CHAT)
    assert "x-request-id" not in request.headers
    assert "x-kcw-execution" not in request.headers
    assert tracing.headers() == {}
