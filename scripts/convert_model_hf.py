#!/usr/bin/env python3
"""Convert the default GGUF model into a Hugging Face safetensors directory for vLLM.

Run it with the vLLM venv's python (it needs transformers, gguf and accelerate):

    "$(scripts/vllm-env path)" scripts/convert_model_hf.py [GGUF] [--out DIR] [--dtype D]

The GGUF weights are dequantized, copied into a fresh ``LlamaForCausalLM`` (so no GGUF
quantization config leaks into config.json) and saved as safetensors together with the
tokenizer and its ChatML chat template. Relative paths are taken from the repository root.
The result is written to a temporary directory and renamed into place, so an existing output
with a readable config.json and model.safetensors is complete, and the script skips it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = Path("models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = Path("models/hf/SmolLM2-135M-Instruct")


def is_complete(out: Path) -> bool:
    """True when config.json parses and model.safetensors holds every byte its header names."""
    try:
        json.loads((out / "config.json").read_text())
        weights = out / "model.safetensors"
        with weights.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        end = max(t["data_offsets"][1] for k, t in header.items() if k != "__metadata__")
        return bool(weights.stat().st_size == 8 + size + end)
    except (OSError, ValueError, KeyError):
        return False


def convert(gguf: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = getattr(torch, dtype)
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model = model.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise SystemExit(f"{gguf} carries no chat template")

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    # The generic fast-tokenizer class loads tokenizer.json with transformers 4 and 5 alike.
    tok_path = tmp / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text())
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_path.write_text(json.dumps(tok_config, indent=2) + "\n")
    for path in tmp.iterdir():
        path.chmod(0o644)  # readable by a container user as well
    if not is_complete(tmp):
        raise SystemExit(f"conversion wrote an incomplete model to {tmp}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", nargs="?", type=Path, default=DEFAULT_GGUF)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    args = parser.parse_args()
    gguf: Path = args.gguf if args.gguf.is_absolute() else ROOT / args.gguf
    out: Path = args.out if args.out.is_absolute() else ROOT / args.out

    if is_complete(out):
        print(f"{out} is already converted; nothing to do")
        return 0
    if not gguf.is_file():
        print(f"{gguf} not found; run: python scripts/fetch_model.py", file=sys.stderr)
        return 1
    print(f"converting {gguf} -> {out} ({args.dtype}) ...")
    start = time.monotonic()
    convert(gguf, out, args.dtype)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{out}: {size:.0f} MB in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
