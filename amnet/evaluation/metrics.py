"""Word and character error rates with jiwer, on transcripts normalized by `amnet.data.text`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import jiwer
import numpy as np

from amnet.data.text import normalize_text


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


@dataclasses.dataclass(frozen=True)
class Recall:
    """Occurrences of chosen words in the references, and how many were recognized."""

    recognized: int = 0
    occurrences: int = 0

    @property
    def rate(self) -> float:
        return self.recognized / max(self.occurrences, 1)


def word_recall(references: Sequence[str], hypotheses: Sequence[str],
                words: Collection[str]) -> Recall:
    """Of the reference occurrences of `words`, those the word alignment of WER matches to
    the same word of the hypothesis (a substitution, deletion or a misplaced copy does not
    count)."""
    refs, hyps = _normalized(references, hypotheses)
    wanted = frozenset(words)
    aligned = jiwer.process_words(refs, hyps)
    recognized = occurrences = 0
    for ref, chunks in zip(aligned.references, aligned.alignments, strict=True):
        occurrences += sum(w in wanted for w in ref)
        recognized += sum(ref[i] in wanted for c in chunks if c.type == "equal"
                          for i in range(c.ref_start_idx, c.ref_end_idx))
    return Recall(recognized, occurrences)


def utterance_errors(references: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Word errors and reference words of each utterance, `[N, 2]` int64."""
    refs, hyps = _normalized(references, hypotheses)
    aligned = jiwer.process_words(refs, hyps)
    rows = []
    for ref, chunks in zip(aligned.references, aligned.alignments, strict=True):
        errors = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                     for c in chunks if c.type != "equal")
        rows.append((errors, len(ref)))
    return np.asarray(rows, np.int64).reshape(-1, 2)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, samples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """WER(a) - WER(b) of two systems on the same utterances (`utterance_errors` of each),
    and its 95% interval over utterances resampled with replacement (the same resample for
    both systems): `(difference, low, high)`."""
    if a.shape != b.shape or not np.array_equal(a[:, 1], b[:, 1]):
        raise ValueError("paired bootstrap needs both systems' errors on the same utterances")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), (samples, len(a)))
    words = a[:, 1][picks].sum(1)
    gaps = (a[:, 0][picks].sum(1) - b[:, 0][picks].sum(1)) / np.maximum(words, 1)
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float((a[:, 0].sum() - b[:, 0].sum()) / max(a[:, 1].sum(), 1)), float(low), float(high)
