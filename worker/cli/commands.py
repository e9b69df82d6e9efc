"""What each `kcw` command does, and the table that maps command names to them.

Every command receives the parsed arguments, the settings and the two streams,
and returns an exit code from `worker.cli.exit_codes`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from worker.cli import exit_codes
from worker.cli.batch import batch, serve
from worker.cli.output import print_checks, require_redis, show_job, wait_visibly
from worker.cli.payloads import build_payload
from worker.cli.top import top
from worker.client import JobClient
from worker.config import Settings
from worker.ops.health import (
    Check,
    check_llm_servers,
    check_redis,
    check_served_model,
    check_workers,
    wait_until_ready,
)

__all__ = ["COMMANDS", "Command"]

Command = Callable[[argparse.Namespace, Settings, TextIO, TextIO], int]


def doctor(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """Check Redis, the LLM server and the workers; exit 0 only if all are ready."""
    checks = [check_redis(settings)]
    llm = check_llm_servers(settings)
    checks.extend(llm)
    served = check_served_model(settings, llm[0])
    if served is not None:
        checks.append(served)
    if checks[0].ok:
        checks.append(check_workers(settings))
    else:
        checks.append(Check("Workers", "fail", "not checked: Redis is not usable", "fix Redis"))
    print_checks(checks, out)
    return exit_codes.OK if all(c.ok for c in checks) else exit_codes.FAILED


def wait(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """Wait until Redis answers and the LLM server is ready (for scripts and `make up`)."""
    ready, checks = wait_until_ready(settings, args.timeout)
    if not ready:
        out.write(f"not ready after {args.timeout:g}s:\n")
    print_checks(checks, out)
    return exit_codes.OK if ready else exit_codes.FAILED


def submit(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    payload = build_payload(args)
    if not require_redis(settings, err):
        return exit_codes.FAILED
    with JobClient(settings) as client:
        job = client.submit(args.kind, payload)
        if not args.wait:
            out.write(job.id + "\n")
            return exit_codes.OK
        err.write(f"submitted {args.kind} job {job.id}\n")
        wait_visibly(job, args.timeout, err)
        return show_job(job, out)


def result(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    if not require_redis(settings, err):
        return exit_codes.FAILED
    with JobClient(settings) as client:
        job = client.job(args.id)
        if args.wait:
            wait_visibly(job, args.timeout, err)
        elif job.status() == "PENDING":
            err.write(
                f"job {args.id}: no result yet (it is queued, unknown, or its result expired "
                "after RESULT_EXPIRES)\n"
            )
        return show_job(job, out)


def stack(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """`kcw up` and `kcw down`."""
    from worker.ops.stack import stack_down, stack_up

    if args.command == "up":
        stack_up(settings, out, with_worker=args.worker, api=settings if args.api else None)
    else:
        stack_down(out)
    return exit_codes.OK


def models(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """`kcw models pull`."""
    from worker.ops.models import pull_model

    target = pull_model(args.repo, Path(args.dir), settings.hf_token.get_secret_value())
    out.write(f"{args.repo} is in {target}; serve it with MODEL_NAME=/models/{target.name}\n")
    return exit_codes.OK


def demo(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """`kcw demo`: the sample jobs, then a small batch through `kcw serve` where it answers."""
    from worker.cli.demo import run_batch_demo, run_demo

    if not require_redis(settings, err):
        return exit_codes.FAILED
    with JobClient(settings) as client:
        code = run_demo(client, args.timeout, out, err)
    batch_code = run_batch_demo(settings, args.timeout, out, err)
    return code if code != exit_codes.OK else batch_code


COMMANDS: dict[str, Command] = {
    "doctor": doctor,
    "up": stack,
    "down": stack,
    "wait": wait,
    "submit": submit,
    "result": result,
    "models": models,
    "demo": demo,
    "serve": serve,
    "batch": batch,
    "top": top,
}
