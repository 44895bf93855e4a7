"""Word and character error rates with jiwer, on transcripts normalized by `amnet.text`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jiwer

from amnet.text import normalize_text


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Edit counts summed over a corpus (so that rates can be pooled across shards)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    reference_length: int = 0

    @property
    def rate(self) -> float:
        errors = self.substitutions + self.deletions + self.insertions
        return errors / max(self.reference_length, 1)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                   dataclasses.astuple(other), strict=True)))


def _counts(output) -> ErrorCounts:
    return ErrorCounts(output.substitutions, output.deletions, output.insertions,
                       output.hits + output.substitutions + output.deletions)


def _normalized(references: Sequence[str], hypotheses: Sequence[str]):
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_text(r, example_id=f"reference #{i}") for i, r in enumerate(references)]
    if not all(refs):
        raise ValueError(f"empty reference at index {refs.index('')}")
    # Hypotheses come from the model's alphabet; normalize them the same way (an empty
    # hypothesis is legal: all deletions). jiwer needs a non-empty string.
    hyps = [normalize_text(h, example_id=f"hypothesis #{i}") or " "
            for i, h in enumerate(hypotheses)]
    return refs, hyps


def word_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    refs, hyps = _normalized(references, hypotheses)
    return _counts(jiwer.process_words(refs, hyps))


def char_errors(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    refs, hyps = _normalized(references, hypotheses)
    return _counts(jiwer.process_characters(refs, hyps))
