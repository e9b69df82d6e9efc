"""`kcw doctor`'s backlog: the jobs waiting in the queue's Redis list and its priority lists."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.support.processes import client_app, start_redis
from worker.broker import close_app
from worker.ops.health import check_workers

PAYLOAD = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def test_doctor_counts_the_jobs_waiting_in_every_priority_list(tmp_path: Path) -> None:
    """`kcw doctor` with no worker: the backlog it reports includes jobs sent with a priority."""
    server = start_redis(tmp_path, secrets.token_urlsafe(12))
    app = client_app(server)
    try:
        app.send_task("kcw.chat", args=[PAYLOAD])
        app.send_task("kcw.chat", args=[PAYLOAD], priority=5)
        app.send_task("kcw.chat", args=[PAYLOAD], priority=9)

        check = check_workers(server.worker_settings(), timeout=0.5)

        assert check.status == "fail"
        assert "3 job(s) waiting in 'kcw'" in check.detail, check.detail
    finally:
        close_app(app)
        server.proc.kill()
        server.proc.wait()
