"""Split a long document into pieces that fit the model's context, at natural boundaries."""

from __future__ import annotations

import re

__all__ = ["split_text"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _pieces(text: str, limit: int) -> list[str]:
    """Break `text` into parts of at most `limit` chars: paragraphs, then sentences, then words."""
    if len(text) <= limit:
        return [text]
    for separator in ("\n\n", "\n"):
        if separator in text:
            parts = [p for p in text.split(separator) if p.strip()]
            if len(parts) > 1:
                return [piece for part in parts for piece in _pieces(part, limit)]
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    if len(sentences) > 1:
        return [piece for s in sentences for piece in _pieces(s, limit)]
    words = text.split(" ")
    if len(words) > 1:
        out, current = [], ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if len(candidate) > limit and current:
                out.append(current)
                current = word
            else:
                current = candidate
        out.append(current)
        return [piece for part in out for piece in _hard_split(part, limit)]
    return _hard_split(text, limit)


def _hard_split(text: str, limit: int) -> list[str]:
    return [text[i : i + limit] for i in range(0, len(text), limit)]


def split_text(text: str, max_chars: int) -> list[str]:
    """Pack the document's natural pieces greedily into chunks of at most `max_chars`."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    chunks: list[str] = []
    current = ""
    for piece in _pieces(text.strip(), max_chars):
        piece = piece.strip()
        if not piece:
            continue
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= max_chars:
            current = candidate
        else:
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks
