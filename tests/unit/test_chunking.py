"""split_text: chunks never exceed the limit, keep every word in order, and cut at paragraphs."""

from __future__ import annotations

import random

import pytest

from worker.jobs.chunking import split_text


def words_of(text: str) -> str:
    """The text with all whitespace removed: what chunking must keep, in order."""
    return "".join(text.split())


def generated_document(seed: int) -> str:
    """A deterministic messy document: paragraphs, lines, sentences, long words, odd spaces."""
    rng = random.Random(seed)
    parts = ["alpha", "beta", "gamma", " ", "  ", "\n", "\n\n", ". ", "! ", "? ", "\t", "\r\n"]
    parts.append("x" * rng.randint(20, 90))
    return "".join(rng.choice(parts) for _ in range(rng.randint(0, 300)))


def paragraphs(count: int, length: int) -> list[str]:
    return [f"P{i:02d} " + "w" * (length - 4) for i in range(count)]


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("max_chars", [1, 7, 25, 80, 400])
def test_chunks_never_exceed_max_chars_and_keep_every_word_in_order(
    seed: int, max_chars: int
) -> None:
    text = generated_document(seed)

    chunks = split_text(text, max_chars)

    assert all(0 < len(chunk) <= max_chars for chunk in chunks)
    assert words_of("".join(chunks)) == words_of(text)


def test_short_text_is_one_chunk_stripped() -> None:
    assert split_text("  A short note.\n", 100) == ["A short note."]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, 10) == []


@pytest.mark.parametrize("max_chars", [0, -5])
def test_max_chars_must_be_positive(max_chars: int) -> None:
    with pytest.raises(ValueError, match="max_chars must be positive"):
        split_text("text", max_chars)


def test_paragraphs_are_packed_whole_and_never_split() -> None:
    paras = paragraphs(10, 40)

    chunks = split_text("\n\n".join(paras), 100)

    # Two 40-char paragraphs and a blank line fit in 100; three do not.
    assert chunks == ["\n\n".join(paras[i : i + 2]) for i in range(0, 10, 2)]


def test_a_paragraph_that_fits_stays_whole_with_its_line_breaks() -> None:
    paras = ["\n".join(f"p{p} line {i}" for i in range(3)) for p in range(4)]  # 29 chars each

    chunks = split_text("\n\n".join(paras), 40)

    assert chunks == paras


def test_a_long_paragraph_is_cut_at_sentences_not_mid_sentence() -> None:
    sentences = [f"Sentence {i} says something." for i in range(12)]
    text = "Short intro.\n\n" + " ".join(sentences)

    chunks = split_text(text, 60)

    pieces = [piece for chunk in chunks for piece in chunk.split("\n\n")]
    assert set(pieces) <= {"Short intro.", *sentences}
    assert words_of("".join(chunks)) == words_of(text)


def test_a_long_sentence_is_cut_between_words() -> None:
    text = " ".join(f"word{i:03d}" for i in range(200))  # 7 chars per word, no full stops

    chunks = split_text(text, 50)

    assert all(len(chunk) <= 50 for chunk in chunks)
    assert all(word.startswith("word") and len(word) == 7 for c in chunks for word in c.split())
    assert words_of("".join(chunks)) == words_of(text)


def test_a_single_giant_word_is_cut_into_full_slices() -> None:
    chunks = split_text("x" * 1050, 100)

    assert chunks == ["x" * 100] * 10 + ["x" * 50]


def test_a_giant_word_between_normal_words_keeps_them_whole() -> None:
    text = "before " + "y" * 250 + " after"

    chunks = split_text(text, 100)

    assert chunks[0].startswith("before")
    assert chunks[-1].endswith("after")
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert words_of("".join(chunks)) == words_of(text)


def test_order_of_chunks_follows_the_document() -> None:
    paras = paragraphs(30, 50)

    chunks = split_text("\n\n".join(paras), 120)

    assert "\n\n".join(chunks) == "\n\n".join(paras)


def test_chunks_carry_no_surrounding_whitespace() -> None:
    chunks = split_text("a \t\t a", 3)

    assert chunks == ["a", "a"]
