"""What building the llama.cpp image costs: from nothing, from the layer cache, from the base.

    .venv/bin/python -m bench.image_builds [--base-image local/python-base:bookworm]
    .venv/bin/python -m bench.image_builds --table [--write]

Three timed builds of Dockerfile.llamacpp on one base image (`--network host`), in order:

- cold: `--no-cache`, so llama-cpp-python and llama-server are both compiled (what a fresh CI
  runner does). Docker 20.10's BuildKit gives such a build fresh `RUN --mount=type=cache`
  mounts too, so pip has no wheel built before; the bench checks in the build's log that both
  were compiled;
- warm: the same build again, every layer from the layer cache;
- from base: `--no-cache` on the image with PREBUILT_IMAGE set to a base built from the
  `compiled` target beforehand (from the cold build's cache; that build is timed apart), so
  only the runtime stage runs: what a machine that pulls the team's base does.

The cold build takes many minutes on 2 cores, and is only worth timing on an idle machine:
it waits (up to --wait-load seconds) for the 1-minute load to fall under --max-load and
records the load it started at. Results go to
`bench/results/image-builds/image-builds-<date>.json` (a folder of their own: `bench.report`
reads every `*.json` of bench/results as a run of `make bench`); `--table` prints the README's
table from the newest of them and `--write` puts it between the README's markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.provenance import code_commit, cpu_model
from worker.ops.compose import buildkit_cli, image_bytes

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results/image-builds"
README = ROOT / "README.md"
LOGS = ROOT / ".run/bench-image-builds"
DOCKERFILE = "Dockerfile.llamacpp"
START, END = "<!-- image-builds-table:start -->", "<!-- image-builds-table:end -->"
STANDIN_BASE = "local/python-base:bookworm"
# Tags of this bench's own, removed at the end (the layer cache stays).
IMAGE, BASE = "kcw-bench-llamacpp", "kcw-bench-llamacpp-base:bench"
# Stages of Dockerfile.llamacpp that compile; a build from the base must not run them.
COMPILE_STAGES = ("builder", "llama-server", "compiled")
# What the log of a build that compiles shows, for each part.
COMPILE_MARKERS = {
    "llama-cpp-python": "Building wheel for llama-cpp-python",
    "llama-server": "llama-server-env: building llama-server",
}
# The code the figures depend on: a change there makes the commit "+changes".
MEASURED = (DOCKERFILE, "scripts/llama-server-env", "scripts/fetch_model.py", "docker/llamacpp")

JSON = dict[str, Any]


def machine(cli: str) -> JSON:
    """What the times depend on: CPU, cores, platform, Docker engine, commit."""
    engine = subprocess.run(
        [cli, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "docker_engine": engine,
        "commit": code_commit(*MEASURED),
    }


def wait_for_quiet(max_load: float, wait_s: float) -> list[float]:
    """Wait until the 1-minute load is under `max_load` (at most `wait_s`); the load then."""
    deadline = time.monotonic() + wait_s
    while True:
        load = [round(x, 2) for x in os.getloadavg()]
        if load[0] < max_load or time.monotonic() >= deadline:
            return load
        print(f"load {load[0]} is over {max_load}: waiting for a quieter machine", flush=True)
        time.sleep(30)


def image_size_mb(cli: str, tag: str) -> float:
    return round(image_bytes(tag, cli) / 1e6, 1)


def docker_build(cli: str, step: str, args: list[str]) -> float:
    """Run one `docker build` (plain progress into .run/bench-image-builds/<step>.log); seconds."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{step}.log"
    command = [cli, "build", "--progress", "plain", *args]
    print(f"{step}: $ {' '.join(command)}  (log: {log.relative_to(ROOT)})", flush=True)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    start = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.monotonic() - start
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"the {step} build failed (log: {log}):\n{tail}")
    print(f"{step}: {seconds:.1f} s", flush=True)
    return seconds


def stages_run(step: str) -> list[str]:
    """Which compile stages a build's log shows at work (not merely CACHED)."""
    text = (LOGS / f"{step}.log").read_text()
    done = set(re.findall(r"^(#\d+) DONE\b", text, re.M))
    ran = []
    for stage in COMPILE_STAGES:
        # A step's header, e.g. `#7 [builder 3/6] RUN ...`; its FROM only resolves an image.
        steps = re.findall(rf"^(#\d+) \[{re.escape(stage)} \d+/\d+\] (?!FROM )", text, re.M)
        if done.intersection(steps):
            ran.append(stage)
    return ran


def compiled_in(step: str) -> list[str]:
    """What a build's log shows compiled: llama-cpp-python's wheel, llama-server."""
    text = (LOGS / f"{step}.log").read_text()
    return [what for what, marker in COMPILE_MARKERS.items() if marker in text]


def measure(cli: str, base_image: str, network: str, max_load: float, wait_s: float) -> JSON:
    """The three timed builds (and the untimed-in-ratio base build); the results document."""
    common = ["-f", DOCKERFILE, "--network", network, "--build-arg", f"BASE_IMAGE={base_image}"]
    load = wait_for_quiet(max_load, wait_s)
    print(f"load before the cold build: {load}", flush=True)
    builds: JSON = {}
    try:
        builds["cold"] = {
            "seconds": docker_build(
                cli, "cold", [*common, "--no-cache", "-t", f"{IMAGE}:cold", "."]
            )
        }
        builds["warm"] = {
            "seconds": docker_build(cli, "warm", [*common, "-t", f"{IMAGE}:warm", "."])
        }
        builds["base"] = {
            "seconds": docker_build(cli, "base", [*common, "--target", "compiled", "-t", BASE, "."])
        }
        from_base = [*common, "--no-cache", "--build-arg", f"PREBUILT_IMAGE={BASE}"]
        builds["from_base"] = {
            "seconds": docker_build(cli, "from_base", [*from_base, "-t", f"{IMAGE}:from-base", "."])
        }
        for step, tag in (
            ("cold", f"{IMAGE}:cold"),
            ("warm", f"{IMAGE}:warm"),
            ("base", BASE),
            ("from_base", f"{IMAGE}:from-base"),
        ):
            builds[step]["image_mb"] = image_size_mb(cli, tag)
            builds[step]["compile_stages_run"] = stages_run(step)
    finally:
        for tag in (f"{IMAGE}:cold", f"{IMAGE}:warm", BASE, f"{IMAGE}:from-base"):
            subprocess.run([cli, "rmi", tag], capture_output=True, check=False)
    compiled = compiled_in("cold")
    if compiled != list(COMPILE_MARKERS):
        raise RuntimeError(
            f"the cold build compiled only {compiled}: something came from a cache, "
            "so its time is not a cold build's"
        )
    if builds["from_base"]["compile_stages_run"]:
        raise RuntimeError(
            "the build from the base ran compile stages "
            f"{builds['from_base']['compile_stages_run']}: PREBUILT_IMAGE did not take effect"
        )
    cold = builds["cold"]["seconds"]
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(cli),
        "base_image": base_image,
        "network": network,
        "load_before_cold": load,
        "cold_compiled": compiled,
        "builds": {k: {**v, "seconds": round(v["seconds"], 1)} for k, v in builds.items()},
        "ratios": {
            "from_base/cold": round(builds["from_base"]["seconds"] / cold, 4),
            "warm/cold": round(builds["warm"]["seconds"] / cold, 4),
        },
    }


# ---------------------------------------------------------------- the README table


def newest(directory: Path = RESULTS) -> Path:
    """The image-builds results file with the latest date in its name."""
    return report.newest(directory, "image-builds-*.json", "make bench-images")


def seconds(value: float) -> str:
    """Whole seconds, or tenths under ten (a warm build takes a fraction of one)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def render(data: JSON, source: str) -> str:
    """The README's table of build times, from one results document."""
    info, builds, ratios = data["machine"], data["builds"], data["ratios"]
    cold = builds["cold"]["seconds"]
    rows = [
        ("cold: `--no-cache`, everything compiled", "cold", 1.0),
        ("warm: the same build again (layer cache)", "warm", ratios["warm/cold"]),
        (
            "from the base: `--no-cache`, `PREBUILT_IMAGE` set",
            "from_base",
            ratios["from_base/cold"],
        ),
    ]
    lines = [
        "| build of the llama.cpp image | seconds | ratio to cold |",
        "|---|---:|---:|",
        *(
            f"| {label} | {seconds(builds[key]['seconds'])} | {ratio:.4f} |"
            for label, key, ratio in rows
        ),
        "",
        f"Measured with `make bench-images` on {info['cpu']} ({info['cores']} cores, load "
        f"{data['load_before_cold'][0]} at the start), Docker {info['docker_engine']}, base "
        f"`{data['base_image']}`, {data['date']}, commit {info['commit']}; from `{source}`. "
        f"Building the base itself from the cold build's cache took "
        f"{seconds(builds['base']['seconds'])} s; from nothing it costs about the cold build "
        f"({cold / 60:.0f} minutes here). The base image is "
        f"{builds['base']['image_mb']:.0f} MB, the llama.cpp image "
        f"{builds['from_base']['image_mb']:.0f} MB.",
    ]
    return "\n".join(lines) + "\n"


def splice(readme: str, table: str) -> str:
    """`readme` with the text between the image-builds markers replaced by `table`."""
    return report.splice(readme, table, START, END)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-image", default=STANDIN_BASE, help="BASE_IMAGE of the builds")
    parser.add_argument("--network", default="host", help="build network")
    parser.add_argument("--max-load", type=float, default=1.5, help="1-minute load to wait for")
    parser.add_argument("--wait-load", type=float, default=600, help="seconds to wait for it")
    parser.add_argument("--table", action="store_true", help="print the README table, no builds")
    parser.add_argument("--write", action="store_true", help="with --table: rewrite README.md")
    parser.add_argument("--file", type=Path, default=None, help="results file for --table")
    args = parser.parse_args(argv)
    if args.table or args.write:
        path = args.file or newest()
        table = render(json.loads(path.read_text()), path.resolve().relative_to(ROOT).as_posix())
        if args.write:
            README.write_text(splice(README.read_text(), table))
            print(f"README.md image-builds table rewritten from {path}")
        else:
            sys.stdout.write(table)
        return 0
    cli = buildkit_cli()
    probe = subprocess.run([cli, "image", "inspect", args.base_image], capture_output=True)
    if probe.returncode != 0:
        print(
            f"{args.base_image} is missing: run `scripts/docker-env bases` (or pass --base-image)",
            file=sys.stderr,
        )
        return 1
    data = measure(cli, args.base_image, args.network, args.max_load, args.wait_load)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"image-builds-{data['date']}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(render(data, out.relative_to(ROOT).as_posix()), end="")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
