"""`kcw`: check the stack, submit jobs, read results, and run the demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from worker.config import Settings, SettingsError, get_settings
from worker.health import Check, check_llm_servers, check_redis, check_workers

__all__ = ["main"]

JOB_KINDS = ("chat", "summarize", "extract", "classify", "embed")
SPINNER = "|/-\\"
MARKS = {"ok": "[ok]  ", "wait": "[wait]", "fail": "[FAIL]"}


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to change."""


# ---------------------------------------------------------------- doctor / wait


def print_checks(checks: list[Check], out: TextIO) -> None:
    for check in checks:
        out.write(f"{MARKS[check.status]} {check.name:<11} {check.detail}\n")
        if check.fix and not check.ok:
            out.write(f"       {'':<11} fix: {check.fix}\n")


def run_doctor(settings: Settings, out: TextIO) -> int:
    """Check Redis, the LLM server and the workers; exit 0 only if all are ready."""
    from worker.app import QUEUE

    checks = [check_redis(settings)]
    checks.extend(check_llm_servers(settings))
    if checks[0].ok:
        checks.append(check_workers(settings, QUEUE))
    else:
        checks.append(Check("Workers", "fail", "not checked: Redis is not usable", "fix Redis"))
    print_checks(checks, out)
    return 0 if all(c.ok for c in checks) else 1


def run_wait(settings: Settings, timeout: float, out: TextIO) -> int:
    """Wait until Redis answers and the LLM server is ready (for scripts and `make up`)."""
    deadline = time.monotonic() + timeout
    while True:
        checks = [check_redis(settings), *check_llm_servers(settings)]
        if all(c.ok for c in checks):
            print_checks(checks, out)
            return 0
        if time.monotonic() > deadline:
            out.write(f"not ready after {timeout:g}s:\n")
            print_checks(checks, out)
            return 1
        time.sleep(1.0)


# ---------------------------------------------------------------- submit / result


def _read_text(value: str) -> str:
    """A literal, `@path` for a file's contents, or `-` for standard input."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    return value


def build_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The job payload from the command line; `--payload` sends raw JSON as it is."""
    if args.payload is not None:
        try:
            payload = json.loads(_read_text(args.payload))
        except json.JSONDecodeError as exc:
            raise UsageError(f"--payload is not valid JSON: {exc.msg} at char {exc.pos}") from None
        except (ValueError, RecursionError) as exc:
            # Integers over Python's 4,300-digit limit, or arrays nested past the recursion limit.
            raise UsageError(f"--payload cannot be read as JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise UsageError("--payload must be a JSON object")
        return payload
    text = " ".join(args.text) if args.text else None
    if text is not None:
        text = _read_text(text)
    kind = args.kind
    if not text:
        raise UsageError(f"give the {kind} input as text, @file or - (stdin), or use --payload")
    sampling = {k: v for k, v in (("max_tokens", args.max_tokens),) if v is not None}
    if kind == "chat":
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": text})
        extra = {"temperature": args.temperature} if args.temperature is not None else {}
        return {"messages": messages, **sampling, **extra}
    if kind == "summarize":
        return {"text": text, **sampling}
    if kind == "extract":
        if not args.schema:
            raise UsageError("extract needs --schema JSON (or --schema @schema.json)")
        return {"text": text, "schema": _read_text(args.schema), **sampling}
    if kind == "classify":
        if not args.labels:
            raise UsageError("classify needs --labels a,b,c")
        return {"text": text, "labels": [x for x in args.labels.split(",") if x != ""]}
    return {"texts": args.text}


def _progress(result: Any) -> str:
    """The job's state, plus chunk progress while a summary's chord runs."""
    from celery.result import AsyncResult

    state = str(result.state).lower()
    info = result.info if result.state == "PROGRESS" else None
    if isinstance(info, dict):
        ids = info.get("chunk_ids") or []
        done = sum(1 for cid in ids if AsyncResult(cid, app=result.app).ready())
        return f"{state}  {info.get('stage', '')}: {done}/{len(ids)} done"
    return state


def wait_for(result: Any, timeout: float, err: TextIO) -> None:
    """Poll until the job ends: a live line on a terminal, one line per change otherwise."""
    started = time.monotonic()
    live = err.isatty()
    width = 0
    last = ""
    tick = 0
    while not result.ready():
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise TimeoutError(
                f"job {result.id} is still {result.state.lower()} after {timeout:g}s; "
                f"check later with `kcw result {result.id}`"
            )
        status = _progress(result)
        if live:
            line = f"{SPINNER[tick % 4]} {result.id}  {elapsed:5.1f}s  {status}"
            err.write("\r" + line.ljust(width))
            err.flush()
            width = len(line)
        elif status != last:
            err.write(f"  {result.id}  {elapsed:5.1f}s  {status}\n")
        last = status
        tick += 1
        time.sleep(0.25)
    if live:
        err.write("\r" + " " * width + "\r")


def show_result(result: Any, out: TextIO) -> int:
    """Print a finished job as JSON; exit 1 if it failed."""
    state = result.state
    if state == "SUCCESS":
        out.write(
            json.dumps(
                {"id": result.id, "state": state, "result": result.result},
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
        return 0
    if state == "FAILURE":
        exc = result.result
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        last_output = getattr(exc, "last_output", None)
        if last_output:
            error["last_output"] = last_output
        out.write(
            json.dumps(
                {"id": result.id, "state": state, "error": error}, indent=2, ensure_ascii=False
            )
            + "\n"
        )
        return 1
    shown: dict[str, Any] = {"id": result.id, "state": state}
    if isinstance(result.info, dict):
        shown["info"] = {k: v for k, v in result.info.items() if k != "chunk_ids"}
    elif isinstance(result.info, BaseException):
        # A job in RETRY carries the error that made it wait.
        shown["retrying_because"] = f"{type(result.info).__name__}: {result.info}"
    out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
    return 0 if state in ("PENDING", "STARTED", "PROGRESS", "RETRY") else 1


def require_redis(settings: Settings, err: TextIO) -> bool:
    """Check Redis before Celery would retry against it for a long while."""
    check = check_redis(settings)
    if not check.ok:
        print_checks([check], err)
    return check.ok


def run_submit(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from worker.app import app

    payload = build_payload(args)
    if not require_redis(settings, err):
        return 1
    result = app.send_task(f"kcw.{args.kind}", args=[payload])
    if not args.wait:
        out.write(result.id + "\n")
        return 0
    err.write(f"submitted {args.kind} job {result.id}\n")
    wait_for(result, args.timeout, err)
    return show_result(result, out)


def run_result(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from celery.result import AsyncResult

    from worker.app import app

    if not require_redis(settings, err):
        return 1
    result: AsyncResult[Any] = AsyncResult(args.id, app=app)
    if args.wait:
        wait_for(result, args.timeout, err)
    elif result.state == "PENDING":
        err.write(
            f"job {args.id}: no result yet (it is queued, unknown, or its result expired "
            "after RESULT_EXPIRES)\n"
        )
    return show_result(result, out)


def run_stack(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from worker.stack import StackError, stack_down, stack_up

    try:
        if args.command == "up":
            stack_up(settings, out, with_worker=args.worker)
        else:
            stack_down(out)
    except StackError as exc:
        err.write(f"kcw: {exc}\n")
        return 1
    return 0


def run_models_pull(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from worker.models import ModelPullError, pull_model

    try:
        target = pull_model(args.repo, Path(args.dir), settings.hf_token.get_secret_value())
    except ModelPullError as exc:
        err.write(f"kcw: {exc}\n")
        return 1
    out.write(f"{args.repo} is in {target}; serve it with MODEL_NAME=/models/{target.name}\n")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcw", description="kc-worker: background LLM jobs through Celery and Redis."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="check Redis, the LLM server and the workers, with fixes")

    up = sub.add_parser("up", help="start Redis and the LLM server (compose or local processes)")
    up.add_argument("--worker", action="store_true", help="also start a worker in the background")
    sub.add_parser("down", help="stop what `kcw up` started")

    wait = sub.add_parser("wait", help="wait until Redis and the LLM server are ready")
    wait.add_argument("--timeout", type=float, default=300.0)

    submit = sub.add_parser("submit", help="queue a job and print its id")
    submit.add_argument("kind", choices=JOB_KINDS)
    submit.add_argument("text", nargs="*", help="the input: text, @file, or - for stdin")
    submit.add_argument("--payload", help="the raw JSON payload (or @file), sent as it is")
    submit.add_argument("--system", help="chat: a system message")
    submit.add_argument("--schema", help="extract: JSON Schema as JSON or @file")
    submit.add_argument("--labels", help="classify: comma-separated labels")
    submit.add_argument("--max-tokens", type=int, dest="max_tokens")
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--wait", action="store_true", help="wait and show the result")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")

    show = sub.add_parser("result", help="show a job's state and result")
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="wait until the job ends")
    show.add_argument("--timeout", type=float, default=600.0)

    models = sub.add_parser("models", help="model files for the LLM servers")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    pull = models_sub.add_parser("pull", help="download a Hugging Face repo into models/hf/")
    pull.add_argument("repo", help="e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    pull.add_argument("--dir", default="models/hf", help="where to put it (default models/hf)")

    demo = sub.add_parser("demo", help="run one sample job of each kind and print the results")
    demo.add_argument("--timeout", type=float, default=600.0)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `kcw submit` also takes its text after the options."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command == "submit" and not any(arg.startswith("-") for arg in rest):
        args.text = [*args.text, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        settings = get_settings()
        if args.command == "doctor":
            return run_doctor(settings, out)
        if args.command in ("up", "down"):
            return run_stack(args, settings, out, err)
        if args.command == "wait":
            return run_wait(settings, args.timeout, out)
        if args.command == "submit":
            return run_submit(args, settings, out, err)
        if args.command == "result":
            return run_result(args, settings, out, err)
        if args.command == "models":
            return run_models_pull(args, settings, out, err)
        if args.command == "demo":
            from worker.demo import run_demo

            if not require_redis(settings, err):
                return 1
            return run_demo(args.timeout, out, err)
    except SettingsError as exc:
        err.write(f"kcw: {exc}\n")
        return 2
    except UsageError as exc:
        err.write(f"kcw: {exc}\n")
        return 2
    except TimeoutError as exc:
        err.write(f"kcw: {exc}\n")
        return 3
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
