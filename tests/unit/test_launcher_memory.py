"""The launcher's memory check: GGUF metadata, the KV cache size, the cgroup limit."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.unit.test_launcher_args import config, launcher

# A llama-style model: 30 layers, 576 wide, 9 heads of which 3 hold K and V.
META = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.context_length": 8192,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
}


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_gguf(path: Path, meta: dict[str, object], padding: int = 0) -> Path:
    """A GGUF file with `meta` (strings as type 8, ints as uint32) and a token array before it."""
    entries = [_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3)]
    entries[0] += b"".join(_string(t) for t in ("a", "bb", "ccc"))
    entries.append(_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2) + b"\0" * 8)
    for key, value in meta.items():
        if isinstance(value, str):
            entries.append(_string(key) + struct.pack("<I", 8) + _string(value))
        else:
            entries.append(_string(key) + struct.pack("<II", 4, int(value)))  # type: ignore[call-overload]
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries))
    path.write_bytes(header + b"".join(entries) + b"\0" * padding)
    return path


def test_the_metadata_that_sizes_the_kv_cache_is_read_past_arrays(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", {**META, "general.name": "skipped"})

    assert launcher.gguf_metadata(model) == META


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"GGML....")
    with pytest.raises(ValueError, match="not a GGUF file"):
        launcher.gguf_metadata(tmp_path / "x.gguf")


def test_the_kv_cache_is_layers_times_tokens_times_kv_width_in_f16() -> None:
    # 30 layers x 32768 tokens x 3 KV heads x (64 + 64) x 2 bytes = 720 MiB.
    assert launcher.kv_cache_bytes(META, 4096 * 8) == 720 * 2**20
    # N_CTX=0: the model's own context length.
    assert launcher.kv_cache_bytes(META, 0) == launcher.kv_cache_bytes(META, 8192)


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "268435456\n"}, 268435456),
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        ({"memory/memory.limit_in_bytes": "1073741824\n"}, 1073741824),
        ({}, None),
    ],
)
def test_the_cgroup_limit_is_read_from_v2_or_v1(
    tmp_path: Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)

    assert launcher.memory_limit(tmp_path) == limit


def test_a_limit_below_the_weights_and_kv_cache_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    model = write_gguf(tmp_path / "m.gguf", META, padding=100 * 2**20)

    with pytest.raises(launcher.MemoryLimitError) as refused:
        launcher.check_memory(config(), model, 256 * 2**20)

    message = str(refused.value)
    assert "the memory limit of this container (256 MiB) is too small for m.gguf" in message
    assert "KV cache (720 MiB for N_CTX=4096 x N_PARALLEL=8)" in message
    assert "LLM_MEMORY_LIMIT" in message
    # Fewer slots fit: 2 x 4096 tokens need 180 MiB of cache.
    launcher.check_memory(config(N_PARALLEL="2"), model, 512 * 2**20)
    # No limit, layers on a GPU, or metadata it cannot read: not checked.
    launcher.check_memory(config(), model, None)
    launcher.check_memory(config(N_GPU_LAYERS="-1"), model, 256 * 2**20)
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03")
    launcher.check_memory(config(), tmp_path / "bad.gguf", 1)


def test_main_exits_with_the_message_when_the_limit_is_too_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = write_gguf(tmp_path / "m.gguf", META)
    monkeypatch.setenv("MODEL_PATH", str(model))
    monkeypatch.setenv("LLAMA_SERVER_BIN", "/bin/true")
    monkeypatch.setattr(launcher, "memory_limit", lambda: 64 * 2**20)
    monkeypatch.setattr(launcher.os, "execve", lambda *a: pytest.fail("must not start"))

    assert launcher.main() == 2
    assert "raise LLM_MEMORY_LIMIT" in caplog.text.replace("Raise", "raise")
