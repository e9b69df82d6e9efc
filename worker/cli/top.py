"""`kcw top`: a live view of the queue, the workers, the LLM servers and running batches.

`kcw top --once --json` prints one snapshot for scripts; `--json` alone prints one per
refresh (JSON lines). On a terminal the view redraws every `--interval` seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from worker.cli import exit_codes
from worker.cli.output import require_redis
from worker.config import Settings
from worker.ops.top import snapshot

__all__ = ["add_top_parser", "render", "top"]

JSON = dict[str, Any]


def add_top_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top_parser = sub.add_parser(
        "top", help="live view: queue depth, workers, LLM server windows, running batches"
    )
    top_parser.add_argument("--once", action="store_true", help="one snapshot, then exit")
    top_parser.add_argument("--json", action="store_true", help="JSON instead of tables")
    top_parser.add_argument(
        "--interval", type=_interval, default=2.0, help="seconds between refreshes (2)"
    )


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--interval takes seconds, like 2; got {text!r}"
        ) from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--interval must be 0.2 to 3600 seconds; got {text}")
    return value


def top(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """Show the snapshot once, as JSON lines, or live until Ctrl-C."""
    if not require_redis(settings, err):
        return exit_codes.FAILED
    if args.json:
        while True:
            out.write(json.dumps(snapshot(settings)) + "\n")
            out.flush()
            if args.once:
                return exit_codes.OK
            time.sleep(args.interval)
    console = Console(file=out)
    if args.once:
        console.print(render(snapshot(settings)))
        return exit_codes.OK
    try:
        with Live(render(snapshot(settings)), console=console, screen=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(snapshot(settings)))
    except KeyboardInterrupt:
        return exit_codes.OK


def render(data: JSON) -> Group:
    """The snapshot as tables: queue, workers, servers, batches."""
    queue = data["queue"]
    head = Table(title="Queue", title_justify="left", expand=False)
    head.add_column("queue")
    head.add_column("waiting", justify="right")
    head.add_column("taken by workers", justify="right")
    head.add_row(queue["name"], str(queue["waiting"]), str(queue["unacked"]))

    workers = Table(title="Workers", title_justify="left")
    for name in ("worker", "pool", "running", "finished", "jobs/s"):
        workers.add_column(name, justify="left" if name == "worker" else "right")
    for w in data["workers"]:
        workers.add_row(
            w["name"],
            str(w["pool"]),
            str(w["running"]),
            str(w["finished"]),
            f"{w['jobs_per_s']:.1f}",
        )
    if not data["workers"]:
        workers.add_row("no worker answered", "", "", "", "")

    servers = Table(title="LLM servers", title_justify="left")
    for name in ("server", "window", "in flight", "health"):
        servers.add_column(name, justify="left" if name == "server" else "right")
    for s in data["servers"]:
        servers.add_row(
            s["url"], str(s["window"]), str(s["in_flight"]), "ok" if s["healthy"] else "DOWN"
        )

    batches = Table(title="Batches", title_justify="left")
    for name in ("batch", "status", "done", "failed", "total", "lines/s", "ETA"):
        batches.add_column(name, justify="left" if name in ("batch", "status") else "right")
    for b in data["batches"]:
        eta = "-" if b["eta_s"] is None else _duration(b["eta_s"])
        batches.add_row(
            b["id"],
            b["status"],
            f"{b['completed']} ({100 * b['done_share']:.0f}%)",
            str(b["failed"]),
            str(b["total"]),
            f"{b['lines_per_s']:.2f}",
            eta,
        )
    return Group(head, workers, servers, batches)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
