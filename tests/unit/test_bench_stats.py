"""The bench's arithmetic: intervals, the steady-state window, counters read from /metrics."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.batch_api import batch_lines, is_line
from bench.counters import parse_counter
from bench.phase import Completion, PhaseResult
from bench.procs import cpu_seconds
from bench.stats import interval, percentile, steady_edges, steady_rate, steady_span
from bench.workload import chat_bodies


def test_interval_brackets_the_median_and_says_when_it_holds_one() -> None:
    tight = interval([0.98, 0.99, 1.0, 1.01, 1.02])
    assert tight.low <= tight.median == 1.0 <= tight.high
    assert tight.verdict() == "indistinguishable"
    assert interval([0.80, 0.81, 0.82, 0.83, 0.84]).verdict() == "below"
    assert interval([1.2, 1.3, 1.25, 1.22, 1.28]).verdict() == "above"


def test_interval_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        interval([])


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 50) == 0.0


def test_steady_rate_leaves_out_ramp_up_and_drain() -> None:
    # 10 s of slow ramp (1/s), 100 s at 10/s, 10 s of slow drain: the middle rate is 10/s.
    samples, count = [(0.0, 0.0)], 0.0
    for t in range(1, 121):
        count += 10.0 if 10 < t <= 110 else 1.0
        samples.append((float(t), count))
    assert steady_rate(samples) == pytest.approx(10.0, rel=0.01)
    whole = count / 120
    assert whole < 9.0  # the naive rate the window avoids


def test_steady_rate_counts_steps_exactly() -> None:
    # 8 waves of 64 lines finishing together every 10 s: 6.4 lines a second.
    samples = [(0.0, 0.0)]
    for wave in range(1, 9):
        samples += [(10.0 * wave - 0.1, 64.0 * (wave - 1)), (10.0 * wave, 64.0 * wave)]
    assert steady_rate(samples) == pytest.approx(6.4)


def test_steady_rate_takes_counts_seen_at_one_instant_as_one_sample() -> None:
    # One job per point, several seen by the same poll: the edge takes the whole poll.
    samples = [(0.0, 0.0)] + [(10.0, float(n)) for n in range(1, 11)]
    samples += [(20.0, float(n)) for n in range(11, 21)]
    samples += [(30.0, float(n)) for n in range(21, 31)]
    assert steady_rate(samples, 0.3, 0.7) == pytest.approx(1.0)


def test_steady_edges_round_up_to_whole_waves() -> None:
    assert steady_edges(640, 64) == (0.1, 0.9)  # ten waves: 10% is one wave
    assert steady_edges(512, 64) == (0.125, 0.875)  # eight waves: one whole wave each end
    assert steady_edges(160, 8) == (0.1, 0.9)
    assert steady_edges(160, 64) == (0.1, 0.9)  # under four waves: the plain share
    assert steady_edges(100, 0) == (0.1, 0.9)
    # Not a whole number of waves: the window still spans whole ones, from the first.
    assert steady_edges(50, 8) == (0.16, 0.8)
    assert steady_edges(100, 8) == (0.16, 0.8)


def _slot_waves(jobs: int, width: int, period: float) -> list[Completion]:
    """Jobs finishing in waves of `width` every `period` s, each seen alone, 1 ms apart
    (a direct client on llama-server's slots, filled at once)."""
    return [
        Completion(0.0, (i // width + 1) * period + (i % width) * 0.001, 64) for i in range(jobs)
    ]


@pytest.mark.parametrize("jobs", [50, 100, 160, 200])
def test_a_part_that_is_not_whole_waves_reads_one_wave_per_period(jobs: int) -> None:
    # A quarter of a 20-wave phase on 8 slots: 50 jobs, six waves and two.
    phase = PhaseResult("a direct", "64", 0, 10, 0.0, _slot_waves(jobs, 8, 2.0), server_width=8)
    assert phase.jobs_per_s == pytest.approx(8 / 2.0, rel=0.005)
    assert phase.tok_per_s == pytest.approx(8 * 64 / 2.0, rel=0.005)


def _polled_waves(waves: int, width: int, period: float) -> list[Completion]:
    """Jobs that finish in lockstep waves, each wave seen over three polls (41, 11, 12)."""
    jobs: list[Completion] = []
    for wave in range(1, waves + 1):
        end = wave * period
        for at, count in ((end, 41), (end + 0.25, 11), (end + 0.5, width - 52)):
            jobs += [Completion(0.0, at, 64) for _ in range(count)]
    return jobs


def test_waves_are_as_wide_as_the_server_runs_at_once() -> None:
    jobs = [Completion(0.0, 1.0 + i, 64) for i in range(160)]
    queued = PhaseResult("b pipeline", "64", 0, 10, 0.0, jobs)
    slotted = PhaseResult("b pipeline", "64", 0, 10, 0.0, jobs, server_width=8)

    assert queued._edges() == (0.125, 0.875)  # waves of 10
    assert slotted._edges() == (0.1, 0.9)  # 10 in flight, 8 slots: waves of 8


@pytest.mark.parametrize("waves", [8, 10])
def test_a_phase_of_lockstep_waves_reads_one_wave_per_period(waves: int) -> None:
    # vLLM on a CPU: 64 requests per wave, a wave every 25 s, polled as a batch is.
    phase = PhaseResult("e batch api", "64", 0, 64, 0.0, _polled_waves(waves, 64, 25.0))
    assert phase.tok_per_s == pytest.approx(64 * 64 / 25.0, rel=0.01)


def test_steady_span_gives_the_count_and_the_seconds_of_the_window() -> None:
    samples = [(float(t), 10.0 * t) for t in range(11)]
    assert steady_span(samples) == pytest.approx((80.0, 8.0))
    assert steady_rate(samples) == pytest.approx(10.0)


def test_steady_rate_refuses_a_phase_that_counted_nothing() -> None:
    with pytest.raises(ValueError, match="nothing was counted"):
        steady_rate([(0.0, 5.0), (1.0, 5.0)])


def test_phase_rates_come_from_finish_times_and_usage() -> None:
    jobs = [Completion(0.0, 1.0 + i, 64) for i in range(100)]
    phase = PhaseResult("a direct", "64", 0, 8, 0.0, jobs)
    assert phase.jobs_per_s == pytest.approx(1.0, rel=0.02)
    assert phase.tok_per_s == pytest.approx(64.0, rel=0.02)
    assert phase.summary()["failures"] == 0


PROM = """# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 1280
llamacpp:prompt_tokens_total 400
"""
VLLM = """vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 23.0
"""


def test_counters_read_llama_server_and_vllm_pages() -> None:
    assert parse_counter(PROM) == 1280
    assert parse_counter(VLLM) == 123
    assert parse_counter("other_metric 5\n") is None


def test_bodies_are_unique_and_generate_exactly_max_tokens() -> None:
    first, second = chat_bodies(4, 64, "a"), chat_bodies(4, 64, "a")
    prompts = [b["messages"][0]["content"] for b in first + second]
    assert len(set(prompts)) == 8
    assert all(b["ignore_eos"] and b["max_tokens"] == 64 for b in first)


def test_batch_lines_and_their_job_ids() -> None:
    text = batch_lines(chat_bodies(3, 8, "e")).decode()
    assert [line.count('"custom_id": "r') for line in text.splitlines()] == [1, 1, 1]
    assert is_line({"id": "batch_abc:3:1"})
    assert not is_line({"id": "5f1c7d2e-0000-4000-8000-000000000000"})


def test_cpu_seconds_counts_live_and_reaped_children() -> None:
    before = cpu_seconds(os.getpid())
    # Half a second of the child's own CPU time, however busy the machine is; then it says so.
    burn = (
        "import time\nwhile time.process_time() < 0.5: pass\n"
        "print('burnt', flush=True)\ntime.sleep(30)"
    )
    with subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "burnt\n"
            live = cpu_seconds(os.getpid()) - before
        finally:
            child.kill()
    assert live >= 0.3  # the live child's time counts as ours


@pytest.mark.parametrize("flag", ["--pairs", "--runs"])
def test_worker_ab_refuses_a_count_below_one(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import worker_ab

    with pytest.raises(SystemExit) as exited:
        worker_ab.main(["--base", "HEAD", flag, "0"])

    assert exited.value.code == 2
    assert "--pairs and --runs must be at least 1" in capsys.readouterr().err


def _centre(schedule: list[tuple[str, int, int]], key: str) -> float:
    """Where a setup's time is centred in a schedule whose whole phases last one unit and
    whose parts last that unit over their number."""
    at, spans = 0.0, []
    for name, _part, parts in schedule:
        length = 1.0 / parts
        if name == key:
            spans.append((at + length / 2, length))
        at += length
    return sum(mid * length for mid, length in spans) / sum(length for _, length in spans)


def test_each_repeat_mirrors_compared_setups_around_the_last_one() -> None:
    from bench.run import repeat_schedule

    keys = ["a", "b", "c", "e", "d", "a1", "b1"]
    schedules = [repeat_schedule(keys, r) for r in range(5)]

    for schedule in schedules:
        runs = {
            key: [(part, parts) for name, part, parts in schedule if name == key] for key in keys
        }
        assert runs["a"] == runs["b"] == runs["a1"] == [(p, 4) for p in range(4)]
        assert runs["e"] == runs["c"] == runs["d"] == runs["b1"] == [(0, 1)]
        names = [name for name, _part, _parts in schedule]
        start = names.index("a")
        assert names[start : start + 9] == ["a", "b", "a", "b", "e", "b", "a", "b", "a"]
        # A steady drift reaches every compared setup alike: their times share a centre.
        assert _centre(schedule, "a") == _centre(schedule, "b") == _centre(schedule, "e")
        assert _centre(schedule, "a1") == _centre(schedule, "b1")
    assert len({schedule[0][0] for schedule in schedules}) >= 3  # no setup always goes first


@pytest.mark.parametrize("passes", [1, 3])
def test_the_compared_setups_take_as_many_turns_as_asked(passes: int) -> None:
    from bench.run import repeat_schedule

    schedule = repeat_schedule(["a", "b", "e"], 0, passes)

    assert [name for name, _part, _parts in schedule] == [
        *["a", "b"] * passes,
        "e",
        *["b", "a"] * passes,
    ]
    assert [part for name, part, _parts in schedule if name == "b"] == list(range(2 * passes))
    assert _centre(schedule, "a") == _centre(schedule, "b") == _centre(schedule, "e")


def test_the_bench_refuses_fewer_than_one_pass(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.run import main, repeat_schedule

    with pytest.raises(SystemExit) as exited:
        main(["--backend", "instant", "--passes", "0"])

    assert exited.value.code == 2
    assert "--passes must be 1 or more, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--passes"):
        repeat_schedule(["a", "b"], 0, 0)


def test_every_backend_of_one_run_writes_to_the_day_it_was_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `make bench` run that passes midnight still writes one results file."""
    from bench import run

    monkeypatch.setattr(run, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "machine", lambda: {"cpu": "Some CPU", "cores": 2, "commit": "c1"})
    monkeypatch.setattr(run, "run_backend", lambda args, tmp: {"ratios": {}})
    for backend in ("instant", "llamacpp"):
        assert run.main(["--backend", backend, "--day", "2026-01-02"]) == 0
    (written,) = tmp_path.iterdir()
    assert written.name == "some-cpu-2c-2026-01-02.json"
    assert set(json.loads(written.read_text())["backends"]) == {"instant", "llamacpp"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run.main(["--backend", "instant", "--day", "02/01/2026"])
    assert exited.value.code == 2
    assert "'02/01/2026' is not a date like 2026-12-07" in capsys.readouterr().err


def test_the_instant_bench_keeps_its_one_token_setups_together() -> None:
    from bench.run import repeat_schedule

    schedule = repeat_schedule(["a", "b", "a1", "b1", "noop", "boff"], 1, passes=1)

    assert [name for name, _part, _parts in schedule] == [
        *["a1", "b1", "noop", "boff", "noop", "b1", "a1"],
        *["a", "b", "a"],
    ]


def test_direct_load_never_has_fewer_in_flight_than_the_pipeline_on_an_llm_server() -> None:
    from bench.run import direct_concurrency

    assert direct_concurrency(32, 64, llm_server=True) == 64  # vLLM: the sweep's pick was noise
    assert direct_concurrency(16, 10, llm_server=True) == 16  # llama-server: more is kept
    assert direct_concurrency(8, 64, llm_server=False) == 8  # the instant stub: the client's cost


def test_the_pipeline_in_flight_is_the_worker_window_not_its_pool() -> None:
    from bench.run import pipeline_in_flight

    assert pipeline_in_flight(4) == 5  # llama-server's slots and its short queue
    assert pipeline_in_flight(None) == 64  # vLLM: LLM_MAX_INFLIGHT, not the 96 threads


def test_jobs_split_into_parts_add_up() -> None:
    from bench.run import share

    assert [share(1281, part, 2) for part in (0, 1)] == [641, 640]
    assert share(40, 0, 1) == 40


def _steady_jobs(start: float, count: int, every: float, tokens: int = 64) -> list[Completion]:
    return [Completion(start, start + every * (i + 1), tokens) for i in range(count)]


def test_a_phase_run_in_halves_is_rated_over_both_steady_spans() -> None:
    # One half at 10 jobs/s for 100 jobs, the other at 5 jobs/s for 100 jobs: the middle
    # 80 jobs of each take 8 s and 16 s, so 160 jobs in 24 s, not the mean of 10 and 5.
    fast = PhaseResult(
        "a direct", "64", 0, 1, 0.0, _steady_jobs(0.0, 100, 0.1), cpu_s={"redis": 1.0}
    )
    slow = PhaseResult(
        "a direct", "64", 0, 1, 50.0, _steady_jobs(50.0, 100, 0.2), cpu_s={"redis": 3.0}
    )
    whole = PhaseResult.merged([fast, slow])

    assert fast.jobs_per_s == pytest.approx(10.0)
    assert whole.jobs_per_s == pytest.approx(160 / 24)
    assert whole.tok_per_s == pytest.approx(64 * 160 / 24)
    assert whole.jobs == 200
    summary = whole.summary()
    assert summary["parts"] == 2
    assert summary["part_tok_per_s"] == [640.0, 320.0]
    assert summary["wall_s"] == pytest.approx(10.0 + 20.0)
    assert summary["cpu_ms_per_job"] == {"redis": 20.0}  # 4 s over 200 jobs


def test_a_phase_in_halves_reads_the_server_counter_of_each_half() -> None:
    def counted(start: float, per_s: float) -> PhaseResult:
        phase = PhaseResult("b pipeline", "64", 0, 1, start, _steady_jobs(start, 100, 0.1))
        phase.counter = [(start + t, per_s * t) for t in range(0, 11)]
        return phase

    whole = PhaseResult.merged([counted(0.0, 100.0), counted(50.0, 300.0)])
    assert whole.server_tok_per_s == pytest.approx(200.0)
    no_counter = PhaseResult("b pipeline", "64", 0, 1, 80.0, _steady_jobs(80.0, 100, 0.1))
    assert PhaseResult.merged([counted(0.0, 100.0), no_counter]).server_tok_per_s is None


def test_a_repeat_records_each_setup_once_with_its_parts_merged() -> None:
    from bench.run import Bench

    ran: list[tuple[str, int, int]] = []

    def phase(setup: str) -> Any:
        def run(r: int, part: int, parts: int) -> PhaseResult:
            ran.append((setup, part, parts))
            start = 100.0 * len(ran)
            return PhaseResult(setup, "64", r, 1, start, _steady_jobs(start, 50, 0.1))

        return run

    bench = object.__new__(Bench)
    bench.phases = []
    phases = {"a": phase("a direct"), "b": phase("b pipeline"), "e": phase("e")}
    bench.run_repeat(phases, 0, passes=1)

    assert ran == [
        ("a direct", 0, 2),
        ("b pipeline", 0, 2),
        ("e", 0, 1),
        ("b pipeline", 1, 2),
        ("a direct", 1, 2),
    ]
    assert [(p.setup, p.jobs, len(p.parts)) for p in bench.phases] == [
        ("e", 50, 0),
        ("b pipeline", 100, 2),
        ("a direct", 100, 2),
    ]


def test_the_edges_report_reads_a_batch_of_waves_both_ways() -> None:
    from bench.edges import readings

    phase = PhaseResult("e batch api", "64", 0, 64, 0.0, _polled_waves(8, 64, 25.0))
    figures = readings(phase)

    assert figures["usage_whole_waves"] == pytest.approx(163.8, abs=0.1)  # 4096 tokens / 25 s
    assert figures["usage_fixed_10_90"] is not None
    assert figures["usage_fixed_10_90"] < 0.99 * 163.8  # a part wave over a whole wave's time
    assert figures["counter_whole_waves"] is None  # no counter sampled here


def test_rotated_arms_take_turns_going_first_and_never_share_a_body() -> None:
    from bench.queued import rotated

    calls: list[tuple[str, int]] = []

    def arm(name: str) -> Any:
        def measure(body: dict[str, int]) -> float:
            calls.append((name, body["n"]))
            return float(body["n"])

        return measure

    bodies = [{"n": n} for n in range(9)]
    out = rotated([arm("x"), arm("y"), arm("z")], 3, bodies)

    assert [name for name, _ in calls[::3]] == ["x", "y", "z"]  # who went first, per round
    assert sorted(n for _, n in calls) == list(range(9))
    assert [len(results) for results in out] == [3, 3, 3]
    assert out == [[0.0, 3.0, 6.0], [1.0, 4.0, 7.0], [2.0, 5.0, 8.0]]  # by arm, not by turn
    with pytest.raises(ValueError, match="3 rounds of 3 measures need 9 bodies"):
        rotated([arm("x"), arm("y"), arm("z")], 3, bodies[:8])


def test_paired_arms_send_the_same_prompts_whichever_goes_first() -> None:
    """Prompts differ in length; two arms given different ones do different work."""
    from bench.queued import rotated
    from bench.workload import paired_bodies

    seen: list[list[str]] = [[], []]

    def arm(index: int) -> Any:
        def measure(body: dict[str, Any]) -> float:
            tag, prompt = body["messages"][0]["content"].split("] ", 1)
            seen[index].append(prompt)
            return float(len(tag))

        return measure

    bodies = paired_bodies(16, 2, 1, "t")
    tagged = [body["messages"][0]["content"] for body in bodies]
    assert len(set(tagged)) == len(tagged)  # no prompt cache shared between arms
    out = rotated([arm(0), arm(1)], 16, bodies)
    assert seen[0] == seen[1]
    assert len(set(seen[0])) == 8  # every prompt, not a subset
    assert out[0] == out[1]  # the tags are as long, too


@pytest.mark.parametrize("arms", [2, 3])
def test_no_paired_request_shares_more_of_its_prefix_with_the_last_one(arms: int) -> None:
    """A prompt cache must not favour the arm that goes second in a round."""
    from bench.queued import rotated
    from bench.workload import paired_bodies

    sent: list[str] = []

    def measure(body: dict[str, Any]) -> float:
        sent.append(body["messages"][0]["content"])
        return 0.0

    rotated([measure] * arms, 40, paired_bodies(40, arms, 1, "t"))
    # characters each request shares with the start of the one before it
    shared = {
        next(k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
        for a, b in itertools.pairwise(sent)
    }
    assert shared == {1}  # "[" only, whichever turn a request had
