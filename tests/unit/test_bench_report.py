"""The README's Performance tables are rendered from the committed bench results, not typed."""

from __future__ import annotations

import json

import pytest

from bench.report import END, README, ROOT, START, newest, render, splice


def test_readme_tables_match_the_newest_committed_results() -> None:
    path = newest()
    expected = render(json.loads(path.read_text()), path.relative_to(ROOT).as_posix())
    text = README.read_text()
    section = text[text.index(START) + len(START) + 1 : text.index(END)]
    assert section == expected, "README is stale: run `make bench-table`"


def test_every_llm_backend_has_the_rows_the_readme_promises() -> None:
    data = json.loads(newest().read_text())
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
    data = json.loads(newest().read_text())
    data["backends"]["vllm"] = {"skipped": "vLLM-cpu needs AVX-512"}
    text = render(data, "x.json")
    assert "vLLM-cpu was not measured: vLLM-cpu needs AVX-512" in text
    assert "llama-server" in text


def test_each_backend_is_shown_with_the_commit_it_ran() -> None:
    data = json.loads(newest().read_text())
    for key, commit in (("llamacpp", "aaa1111"), ("vllm", "bbb2222+changes"), ("instant", "ccc3")):
        data["backends"][key]["commit"] = commit
    head = render(data, "x.json").splitlines()[0]
    for shown in ("aaa1111 (llama-server)", "bbb2222+changes (vLLM-cpu)", "ccc3 (instant stub)"):
        assert shown in head


def test_one_commit_for_every_backend_is_named_once() -> None:
    data = json.loads(newest().read_text())
    for backend in data["backends"].values():
        backend["commit"] = "abc1234"
    head = render(data, "x.json").splitlines()[0]
    assert "commit abc1234;" in head
    assert "(llama-server)" not in head
    del data["backends"]["vllm"]["commit"]
    assert f"commit {data['machine']['commit']};" in render(data, "x.json").splitlines()[0]


def test_the_ratio_table_says_how_many_parts_the_compared_setups_ran_in() -> None:
    data = json.loads(newest().read_text())
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
