"""WER/CER: jiwer on shared-normalized text, poolable counts, clear errors."""

import pytest

from amnet.evaluation import metrics
from amnet.evaluation.metrics import ErrorCounts, char_errors, word_errors


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


def test_word_recall_counts_aligned_matches_only():
    refs = ["who won katie ledecky's race", "kalisz and ledecky", "play music"]
    hyps = ["who won katie ledecky race", "ledecky and kalisz", "play music"]
    # ledecky's -> substituted; in the second, each name is in the hypothesis but only
    # "and" aligns: a word that moved is not recognized.
    found = metrics.word_recall(refs, hyps, {"ledecky", "ledecky's", "kalisz"})
    assert (found.recognized, found.occurrences) == (0, 3) and found.rate == 0
    found = metrics.word_recall(refs, refs, {"ledecky", "ledecky's", "kalisz"})
    assert (found.recognized, found.occurrences, found.rate) == (3, 3, 1.0)
    assert metrics.word_recall(refs, hyps, set()).rate == 0  # no occurrences: 0, not a crash
    assert metrics.word_recall(["a b a"], ["a x a"], {"a"}).recognized == 2


def test_utterance_errors_sum_to_the_corpus_counts_and_the_bootstrap_brackets_the_gap():
    refs = ["a b c d", "e f g", "h i", "j k l m n"]
    hyps = ["a x c d", "e f g h", "", "j k l m n"]
    per = metrics.utterance_errors(refs, hyps)
    total = metrics.word_errors(refs, hyps)
    assert per[:, 0].sum() == total.substitutions + total.deletions + total.insertions
    assert per[:, 1].sum() == total.reference_length
    exact = metrics.utterance_errors(refs, refs)
    gap, low, high = metrics.paired_bootstrap(per, exact, samples=500)
    assert gap == pytest.approx(total.rate) and 0 <= low <= gap <= high
    assert metrics.paired_bootstrap(exact, exact) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same utterances"):
        metrics.paired_bootstrap(per, per[:3])
