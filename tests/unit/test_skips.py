"""Which skips count as lost coverage (tests/support/skips.py)."""

from __future__ import annotations

import pytest

from tests.support.skips import guarded


@pytest.mark.parametrize(
    ("nodeid", "lost"),
    [
        ("tests/integration/test_jobs.py::test_chat_job[vllm]", True),
        ("tests/integration/test_launcher.py::test_vllm_server_answers", True),
        ("tests/docker/test_stack.py::test_services_report_healthy", True),
        ("tests/integration/test_jobs.py::test_chat_job[llamacpp]", False),
        ("tests/unit/test_config.py::test_defaults", False),
    ],
)
def test_vllm_and_docker_skips_are_lost_coverage(nodeid: str, lost: bool) -> None:
    assert guarded(nodeid) is lost
