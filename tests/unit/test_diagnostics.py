"""The logs a failed test shows: only those written during the test, newest first, cut short."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.diagnostics import recent_logs


def test_only_logs_written_since_the_start_are_shown_newest_first(tmp_path: Path) -> None:
    old, worker, server = (
        tmp_path / "old.log",
        tmp_path / "worker-a.log",
        tmp_path / "sub" / "b.log",
    )
    server.parent.mkdir()
    for log in (old, worker, server):
        log.write_text(f"{log.stem} line\n")
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(worker, (now - 5, now - 5))
    os.utime(server, (now, now))
    (tmp_path / "notes.txt").write_text("not a log")

    shown = list(recent_logs([tmp_path], since=now - 10))
    assert [title.split()[1] for title, _ in shown] == ["b.log", "worker-a.log"]
    assert shown[0][1] == "b line\n"


def test_a_long_log_is_cut_to_its_end(tmp_path: Path) -> None:
    (tmp_path / "w.log").write_text("x" * 50 + "THE END")
    [(title, text)] = recent_logs([tmp_path], since=0, tail=7)
    assert text == "THE END"
    assert "last 7 of 57 chars" in title
