"""Text normalization and tokenizers: the canonical form, round trips and clear errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amnet.data.text import (
    ALPHABET,
    BLANK_ID,
    CharTokenizer,
    SentencePieceTokenizer,
    TranscriptError,
    normalize_text,
)


@pytest.mark.parametrize("raw, expected", [
    ("Set a Timer, please!", "set a timer please"),
    ("Beyoncé’s  new   album", "beyonce's new album"),
    ("twenty-five minutes", "twenty five minutes"),
    ("  HELLO\tWORLD \n", "hello world"),
    ('"Quoted" (text); ok?', "quoted text ok"),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("raw, culprit", [("set 5 timers", "'5'"), ("mail me @ home", "'@'"),
                                         ("東京", "'東'")])
def test_unknown_characters_name_the_example_and_character(raw, culprit):
    with pytest.raises(TranscriptError, match=rf"utt-7.*{culprit}"):
        normalize_text(raw, example_id="utt-7")


def test_empty_transcript_is_an_error():
    with pytest.raises(TranscriptError, match="utt-3.*empty"):
        CharTokenizer().encode(" ... ", example_id="utt-3")


@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz'", min_size=1, max_size=10),
                min_size=1, max_size=8))
def test_char_tokenizer_round_trip(words):
    text = " ".join(words)
    tokenizer = CharTokenizer()
    ids = tokenizer.encode(text)
    assert ids.dtype.name == "int32" and BLANK_ID not in ids
    assert tokenizer.decode(ids) == text
    assert ids.max() < tokenizer.vocab_size == len(ALPHABET) + 1


def test_decode_skips_blanks():
    tokenizer = CharTokenizer()
    ids = list(tokenizer.encode("hi there"))
    assert tokenizer.decode([0] + ids[:2] + [0, 0] + ids[2:]) == "hi there"


def test_sentencepiece_round_trip(tmp_path):
    texts = [f"set a timer for {n} minutes" for n in ("five", "ten", "twenty", "thirty")] * 20
    texts += ["call mom", "play some jazz", "what's the weather in paris"] * 20
    path = SentencePieceTokenizer.train(texts, vocab_size=40, model_prefix=tmp_path / "sp")
    tokenizer = SentencePieceTokenizer(path)
    for text in ["set a timer for ten minutes", "what's the weather in paris"]:
        ids = tokenizer.encode(text)
        assert BLANK_ID not in ids
        assert tokenizer.decode(ids) == text


def test_sentencepiece_missing_model_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        SentencePieceTokenizer(tmp_path / "nope.model")
