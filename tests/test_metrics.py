"""WER/CER: jiwer on shared-normalized text, poolable counts, clear errors."""

import pytest

from amnet.metrics import ErrorCounts, char_errors, word_errors


def test_word_errors_count_edits_after_normalization():
    counts = word_errors(["Set a timer, please!", "call mom"], ["set the timer please", ""])
    assert counts == ErrorCounts(substitutions=1, deletions=2, insertions=0, reference_length=6)
    assert counts.rate == pytest.approx(3 / 6)


def test_counts_pool_across_shards():
    refs, hyps = ["play jazz", "turn on the lamp", "what day is it"], ["play jams", "turn on lamp",
                                                                      "what day is it today"]
    pooled = word_errors(refs[:1], hyps[:1]) + word_errors(refs[1:], hyps[1:])
    assert pooled == word_errors(refs, hyps)
    assert pooled.rate == pytest.approx(3 / 10)


def test_char_errors():
    assert char_errors(["abc"], ["abd"]).rate == pytest.approx(1 / 3)


def test_mismatched_lists_and_bad_references_are_errors():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_errors(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="reference #0"):
        word_errors(["call 911"], ["call nine one one"])
