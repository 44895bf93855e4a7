"""Text normalization and tokenizers shared by the corpus, the models and WER scoring.

One normalization (`normalize_text`) is used everywhere a transcript is read or scored, so the
corpus, the training targets and the WER references can never disagree.

Normalization, in order:
  1. Unicode NFKD, then combining marks dropped ("Beyoncé" -> "beyonce").
  2. Lower case.
  3. Typographic apostrophes (’ ‘ `) become "'"; hyphens and dashes become a space.
  4. Sentence punctuation (. , ! ? ; : " ( ) [ ]) is removed.
  5. Whitespace runs collapse to one space; leading/trailing space is stripped.
Anything else left outside `[a-z' ]` (digits, symbols, other scripts) is an error that names the
character and the example: numbers must be spelled out in transcripts, as LibriSpeech does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ALPHABET = " '" + "abcdefghijklmnopqrstuvwxyz"
BLANK_ID = 0
CHAR_VOCAB_SIZE = 1 + len(ALPHABET)  # the character tokenizer's: blank + characters

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "ʼ": "'"})
_DASHES = re.compile(r"[-‐‑‒–—―]")
_PUNCTUATION = re.compile(r"[.,!?;:\"()\[\]“”«»]")
_SPACES = re.compile(r"\s+")
_INVALID = re.compile(r"[^a-z' ]")


class TranscriptError(ValueError):
    """A transcript that cannot be used: empty, or with characters outside the alphabet."""


def normalize_text(text: str, *, example_id: str = "<unnamed>") -> str:
    """Returns the canonical form of a transcript (see module docstring).

    Raises:
      TranscriptError: if a character outside `[a-z' ]` remains after normalization; the message
        names the character, its code point and `example_id`.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    text = _DASHES.sub(" ", text.translate(_APOSTROPHES))
    text = _SPACES.sub(" ", _PUNCTUATION.sub("", text)).strip()
    bad = _INVALID.search(text)
    if bad:
        ch = bad.group()
        raise TranscriptError(
            f"example {example_id!r}: character {ch!r} (U+{ord(ch):04X}) is not in the alphabet "
            f"[a-z' ] after normalization; spell numbers and symbols out: {text!r}"
        )
    return text


class CharTokenizer:
    """Characters `[ 'a-z]` with id 0 reserved for the RNN-T blank (also used as padding)."""

    def __init__(self, alphabet: str = ALPHABET):
        self.alphabet = alphabet
        self._ids = {ch: i + 1 for i, ch in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + 1

    def encode(self, text: str, *, example_id: str = "<unnamed>") -> np.ndarray:
        """Normalizes `text` and returns its ids `[U]` (int32). Empty transcripts are errors."""
        text = normalize_text(text, example_id=example_id)
        if not text:
            raise TranscriptError(f"example {example_id!r}: empty transcript")
        return np.fromiter((self._ids[ch] for ch in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Ids back to text; blank/padding ids are skipped."""
        return "".join(self.alphabet[i - 1] for i in np.asarray(ids).tolist() if i != BLANK_ID)

    def token_texts(self) -> tuple[str, ...]:
        """The text of every id ("" for the blank)."""
        return ("", *self.alphabet)


class SentencePieceTokenizer:
    """Sentencepiece wordpieces over normalized text; id 0 is the blank/padding piece."""

    def __init__(self, model_path: str | Path):
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"sentencepiece model not found: {path}")
        self._sp = spm.SentencePieceProcessor(model_file=str(path))

    @staticmethod
    def train(texts: Sequence[str], *, vocab_size: int, model_prefix: str | Path) -> Path:
        """Trains a unigram model on normalized `texts`; returns the `.model` path."""
        import sentencepiece as spm

        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([normalize_text(t) for t in texts]),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=1.0,
            pad_id=BLANK_ID,
            unk_id=1,
            bos_id=-1,
            eos_id=-1,
            pad_piece="<blank>",
            minloglevel=2,
        )
        return Path(f"{model_prefix}.model")

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str, *, example_id: str = "<unnamed>") -> np.ndarray:
        text = normalize_text(text, example_id=example_id)
        if not text:
            raise TranscriptError(f"example {example_id!r}: empty transcript")
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._sp.decode([i for i in np.asarray(ids).tolist() if i != BLANK_ID])

    def token_texts(self) -> tuple[str, ...]:
        """The piece of every id ("" for the blank; "▁" marks a word start)."""
        return ("", *(self._sp.id_to_piece(i) for i in range(1, self.vocab_size)))


Tokenizer = CharTokenizer | SentencePieceTokenizer


def read_phrases(path: str | Path) -> list[tuple[str, str]]:
    """(phrase, where) of each non-blank line of a phrase file (`where`: "<path>:<line>", for
    errors); an unreadable file is a ValueError naming it."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read phrases {path}: {e.strerror}") from None
    return [(line.strip(), f"{path}:{i + 1}") for i, line in enumerate(lines) if line.strip()]
