"""`kcw`'s command line: one subparser per command; `submit`'s kinds come from the registry."""

from __future__ import annotations

import argparse

from worker.cli.batch import add_batch_parsers
from worker.cli.top import add_top_parser
from worker.jobs import registry

__all__ = ["build_parser", "parse_args"]


def _add_submit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = sub.add_parser("submit", help="queue a job and print its id")
    kinds = registry.kinds()
    submit.add_argument(
        "kind",
        choices=[kind.name for kind in kinds],
        help="; ".join(f"{kind.name}: {kind.help}" for kind in kinds),
    )
    submit.add_argument("text", nargs="*", help="the input: text, @file, or - for stdin")
    submit.add_argument("--payload", help="the raw JSON payload (or @file), sent as it is")
    submit.add_argument("--system", help="chat: a system message")
    submit.add_argument("--schema", help="extract: JSON Schema as JSON or @file")
    submit.add_argument("--labels", help="classify: comma-separated labels")
    submit.add_argument("--max-tokens", type=int, dest="max_tokens")
    submit.add_argument("--temperature", type=float)
    submit.add_argument("--wait", action="store_true", help="wait and show the result")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kcw", description="kc-worker: background LLM jobs through Celery and Redis."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="check Redis, the LLM server and the workers, with fixes")

    up = sub.add_parser("up", help="start Redis and the LLM server (compose or local processes)")
    up.add_argument("--worker", action="store_true", help="also start a worker in the background")
    up.add_argument(
        "--api",
        action="store_true",
        help="also start the Batch API (`kcw serve`) in the background",
    )
    sub.add_parser("down", help="stop what `kcw up` started")

    wait = sub.add_parser("wait", help="wait until Redis and the LLM server are ready")
    wait.add_argument("--timeout", type=float, default=300.0)

    _add_submit(sub)

    show = sub.add_parser("result", help="show a job's state and result")
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="wait until the job ends")
    show.add_argument("--timeout", type=float, default=600.0)

    models = sub.add_parser("models", help="model files for the LLM servers")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    pull = models_sub.add_parser("pull", help="download a Hugging Face repo into models/hf/")
    pull.add_argument("repo", help="e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    pull.add_argument("--dir", default="models/hf", help="where to put it (default models/hf)")

    add_batch_parsers(sub)
    add_top_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="run one sample job of each kind, then a small batch through the Batch API if it runs",
    )
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
