"""Memory sizes as Docker and Redis read them, for checking `.env` before they do."""

from __future__ import annotations

import re

__all__ = ["REDIS_SIZE", "docker_bytes", "redis_bytes"]

# What redis-server reads as a memory size (bytes, or k/kb/m/mb/g/gb), or auto.
REDIS_SIZE = re.compile(r"auto|\d+(?:[kmg]b?|b)?", re.IGNORECASE)
# Redis's units: k, m, g are powers of 1000; kb, mb, gb powers of 1024.
REDIS_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 1 << 10, "m": 10**6, "mb": 1 << 20, "g": 10**9}
REDIS_UNITS["gb"] = 1 << 30


def redis_bytes(size: str) -> int:
    """Bytes of a size redis-server reads (not auto)."""
    digits = size.rstrip("kmgbKMGB")
    return int(digits) * REDIS_UNITS[size[len(digits) :].lower()]


# A memory size as Docker reads it: bytes, or a number with b, k, m or g.
DOCKER_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bkmg]?)", re.IGNORECASE)
DOCKER_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def docker_bytes(size: str) -> int:
    """Bytes of a Docker memory size such as 512m or 8g."""
    match = DOCKER_SIZE.fullmatch(size.strip())
    if not match:
        raise ValueError("must be a memory size Docker reads, such as 512m or 8g")
    return int(float(match.group(1)) * DOCKER_UNITS[match.group(2).lower()])
