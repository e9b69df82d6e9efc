"""bench.limit: llama-batched-bench's output read into rows, from real captured runs."""

from __future__ import annotations

import pytest

from bench.limit import LimitRow, parse_output

# `llama-batched-bench -m models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf -c 2048 --no-kv-unified
# -npp 40 -ntg 64 -npl 1,2,4,8,10,16 --output-format jsonl` on 2 idle cores: stderr, stdout.
JSONL_STDERR = """\
0.00.068.836 W llama_context: n_ctx is not divisible by n_seq_max - rounding down to 4096
"""
JSONL = """\
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 1, "n_kv": 104, "t_pp": 0.083383, "speed_pp": 479.714081, "t_tg": 0.370240, "speed_tg": 172.860840, "t": 0.453623, "speed": 229.265274}
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 2, "n_kv": 208, "t_pp": 0.158872, "speed_pp": 503.550049, "t_tg": 0.791781, "speed_tg": 161.660858, "t": 0.950653, "speed": 218.796967}
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 4, "n_kv": 416, "t_pp": 0.308588, "speed_pp": 518.490662, "t_tg": 1.175377, "speed_tg": 217.802460, "t": 1.483965, "speed": 280.330048}
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 8, "n_kv": 832, "t_pp": 0.608431, "speed_pp": 525.942993, "t_tg": 1.733025, "speed_tg": 295.437164, "t": 2.341456, "speed": 355.334473}
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 10, "n_kv": 1040, "t_pp": 0.761613, "speed_pp": 525.201111, "t_tg": 2.227772, "speed_tg": 287.282532, "t": 2.989385, "speed": 347.897644}
{"n_kv_max": 4096, "n_batch": 2048, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 40, "tg": 64, "pl": 16, "n_kv": 1664, "t_pp": 1.256449, "speed_pp": 509.372040, "t_tg": 2.916849, "speed_tg": 351.063782, "t": 4.173298, "speed": 398.725433}

"""  # noqa: E501 (verbatim output)

# The same command without --output-format (markdown, the default), run just before: stdout.
MARKDOWN = """\

llama_batched_bench: n_kv_max = 4096, n_batch = 2048, n_ubatch = 512, flash_attn = -1, is_pp_shared = 0, is_tg_separate = 0, n_gpu_layers = -1, n_threads = 2, n_threads_batch = 2

|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|
|    40 |     64 |    1 |    104 |    0.089 |   451.83 |    0.368 |   174.09 |    0.456 |   228.00 |
|    40 |     64 |    2 |    208 |    0.166 |   481.37 |    0.820 |   156.06 |    0.986 |   210.87 |
|    40 |     64 |    4 |    416 |    0.319 |   501.20 |    1.209 |   211.73 |    1.528 |   272.20 |
|    40 |     64 |    8 |    832 |    0.629 |   508.49 |    1.780 |   287.64 |    2.409 |   345.32 |
|    40 |     64 |   10 |   1040 |    0.785 |   509.48 |    2.325 |   275.23 |    3.110 |   334.36 |
|    40 |     64 |   16 |   1664 |    1.256 |   509.67 |    2.918 |   350.92 |    4.174 |   398.68 |

"""  # noqa: E501 (verbatim output)


def test_jsonl_rows_in_order_with_the_s_tg_column_as_decode_speed() -> None:
    rows = parse_output(JSONL)
    assert [row.parallel for row in rows] == [1, 2, 4, 8, 10, 16]
    assert all(row.prompt_tokens == 40 and row.gen_tokens == 64 for row in rows)
    assert rows[0] == LimitRow(
        parallel=1,
        prompt_tokens=40,
        gen_tokens=64,
        prompt_tok_per_s=479.714081,
        gen_tok_per_s=172.86084,
        total_s=0.453623,
    )
    assert rows[-1].gen_tok_per_s == pytest.approx(351.063782)
    assert rows[-1].total_s == pytest.approx(4.173298)


def test_log_lines_around_the_rows_are_skipped() -> None:
    assert parse_output(JSONL_STDERR + JSONL + "\n{not json\n{}\n") == parse_output(JSONL)


def test_markdown_table_gives_the_same_columns() -> None:
    rows = parse_output(MARKDOWN)
    assert [row.parallel for row in rows] == [1, 2, 4, 8, 10, 16]
    assert rows[0] == LimitRow(1, 40, 64, 451.83, 174.09, 0.456)
    assert rows[-1] == LimitRow(16, 40, 64, 509.67, 350.92, 4.174)


def test_no_rows_is_an_error_that_shows_the_output() -> None:
    output = "0.00.070.001 E llama_model_load: error loading model: no such file\n"
    with pytest.raises(ValueError, match="no llama-batched-bench result rows") as caught:
        parse_output(output)
    assert "error loading model" in str(caught.value)
    with pytest.raises(ValueError, match="empty"):
        parse_output("")
