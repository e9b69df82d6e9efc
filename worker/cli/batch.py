"""`kcw serve` and `kcw batch ...`: run the Batch API, and use it from the shell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from worker.cli import exit_codes
from worker.cli.batch_http import BatchApi
from worker.config import Settings
from worker.errors import UsageError

__all__ = ["add_batch_parsers", "batch", "serve"]

JSON = dict[str, Any]


def add_batch_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_parser = sub.add_parser("serve", help="run the OpenAI-compatible Files and Batch API")
    serve_parser.add_argument("--host", help="address to bind (default API_HOST)")
    serve_parser.add_argument("--port", type=int, help="port (default API_PORT)")

    parser = sub.add_parser("batch", help="batches of requests through `kcw serve`")
    commands = parser.add_subparsers(dest="batch_command", required=True)
    submit = commands.add_parser("submit", help="upload a JSONL file and start a batch")
    submit.add_argument("file", type=Path, help="JSONL: one {custom_id, method, url, body} a line")
    submit.add_argument("--endpoint", help="default: the url of the file's first line")
    submit.add_argument("--wait", action="store_true", help="show progress until it ends")
    submit.add_argument("--timeout", type=float, default=86400.0, help="seconds to wait")
    for name, text in (("status", "show a batch"), ("cancel", "cancel a batch")):
        commands.add_parser(name, help=text).add_argument("id")
    listing = commands.add_parser("list", help="list batches, newest first")
    listing.add_argument("--limit", type=int, default=20)
    download = commands.add_parser("download", help="save a batch's output and error files")
    download.add_argument("id")
    download.add_argument("--dir", type=Path, default=Path("."), help="where to save them")
    retry = commands.add_parser("retry", help="a new batch from the failed lines of one")
    retry.add_argument("id")
    retry.add_argument("--wait", action="store_true")
    retry.add_argument("--timeout", type=float, default=86400.0)


def serve(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from worker.api.serve import serve as run

    run(settings, args.host, args.port)
    return exit_codes.OK


def _dump(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _endpoint_of(path: Path) -> str:
    with path.open("rb") as source:
        for raw in source:
            if raw.strip():
                try:
                    url = json.loads(raw).get("url")
                except (ValueError, AttributeError):
                    url = None
                if isinstance(url, str):
                    return url
                break
    raise UsageError(f"cannot read a url from the first line of {path}; give --endpoint")


def _start(api: BatchApi, path: Path, endpoint: str, metadata: dict[str, str] | None) -> JSON:
    uploaded = api.upload(path)
    return api.create(uploaded["id"], endpoint, metadata)


def _finish(api: BatchApi, batch: JSON, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.wait:
        out.write(batch["id"] + "\n")
        return exit_codes.OK
    from worker.cli.batch_progress import follow

    err.write(f"batch {batch['id']} ({batch['endpoint']})\n")
    batch = follow(lambda: api.batch(batch["id"]), err, args.timeout)
    _dump(batch, out)
    if batch["status"] == "failed":
        for problem in (batch.get("errors") or {}).get("data") or []:
            err.write(f"line {problem.get('line')}: {problem.get('message')}\n")
    return exit_codes.OK if batch["status"] == "completed" else exit_codes.FAILED


def _retry(api: BatchApi, batch_id: str, err: TextIO) -> JSON:
    old = api.batch(batch_id)
    if not old.get("error_file_id"):
        raise UsageError(f"batch {batch_id} has no failed lines to retry")
    failed = {
        json.loads(raw)["custom_id"]
        for raw in api.content(old["error_file_id"]).splitlines()
        if raw.strip()
    }
    lines = [
        raw
        for raw in api.content(old["input_file_id"]).splitlines()
        if raw.strip() and json.loads(raw).get("custom_id") in failed
    ]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{batch_id}_retry.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        err.write(f"retrying {len(lines)} failed lines of {batch_id}\n")
        return _start(api, path, old["endpoint"], {"retry_of": batch_id})


def batch(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    """`kcw batch submit|status|list|cancel|download|retry`."""
    from worker.cli.batch_progress import describe

    command = args.batch_command
    with BatchApi(settings) as api:
        if command == "submit":
            if not args.file.is_file():
                raise UsageError(f"no such file: {args.file}")
            endpoint = args.endpoint or _endpoint_of(args.file)
            return _finish(api, _start(api, args.file, endpoint, None), args, out, err)
        if command == "retry":
            return _finish(api, _retry(api, args.id, err), args, out, err)
        if command == "status":
            found = api.batch(args.id)
            _dump(found, out)
            err.write(describe(found) + "\n")
        elif command == "cancel":
            _dump(api.cancel(args.id), out)
        elif command == "list":
            for item in api.batches(args.limit):
                out.write(f"{item['id']}  {item['endpoint']:<22} {describe(item)}\n")
        elif command == "download":
            found = api.batch(args.id)
            args.dir.mkdir(parents=True, exist_ok=True)
            saved = 0
            for key, suffix in (("output_file_id", "output"), ("error_file_id", "errors")):
                if found.get(key):
                    target = args.dir / f"{args.id}_{suffix}.jsonl"
                    target.write_bytes(api.content(found[key]))
                    out.write(f"{target}\n")
                    saved += 1
            if not saved:
                err.write(f"batch {args.id} is {found['status']} and has no files yet\n")
                return exit_codes.FAILED
    return exit_codes.OK
