"""The command grammar: intents, vocabulary growth per generation, determinism."""

import re

import numpy as np
import pytest

from amnet.data.corpus import grammar
from amnet.data.corpus.lexicon import SLOT_VALUES
from amnet.data.text import normalize_text


def test_number_words():
    assert grammar.number_to_words(0) == "zero"
    assert grammar.number_to_words(42) == "forty two"
    assert grammar.number_to_words(1905) == "one thousand nine hundred five"
    assert grammar.number_to_words(2_000_017) == "two million seventeen"
    assert [grammar.ordinal_words(n) for n in (1, 2, 3, 12, 20, 23)] == [
        "first", "second", "third", "twelfth", "twentieth", "twenty third"]
    with pytest.raises(ValueError):
        grammar.number_to_words(-1)


def test_base_generation_has_the_required_intents():
    names = {i.name for i in grammar.INTENTS if i.generation == 0}
    assert {"timer", "alarm", "weather", "music", "call", "shopping_list", "smart_home",
            "sports_score", "unit_conversion", "date_question"} <= names


def test_lexicon_values_are_normalized_and_unique():
    seen = {}
    for generation, slots in SLOT_VALUES.items():
        for slot, values in slots.items():
            for value in values:
                assert normalize_text(value) == value, (generation, slot, value)
                assert (slot, value) not in seen, (slot, value, seen.get((slot, value)))
                seen[(slot, value)] = generation


def test_vocabulary_grows_every_generation_past_3000_words():
    sizes = [len(grammar.Grammar(g).vocabulary()) for g in range(grammar.NUM_GENERATIONS)]
    assert all(b > a + 100 for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    assert sizes[-1] >= 3000, sizes


def test_sampling_is_deterministic_and_normalized():
    g = grammar.Grammar(2)
    a = [g.sample(np.random.default_rng(5)) for _ in range(3)]
    b = [g.sample(np.random.default_rng(5)) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(0)
    for _ in range(500):
        text, _ = g.sample(rng, fresh=bool(rng.integers(2)))
        assert normalize_text(text) == text and not re.search(r"[{}()\[\]|]", text)


@pytest.mark.parametrize("generation", range(1, grammar.NUM_GENERATIONS))
def test_fresh_sentences_carry_new_content(generation):
    """A fresh sentence of generation k comes from a new intent or uses a value new at k."""
    new_intents = {i.name for i in grammar.INTENTS if i.generation == generation}
    new_values = {v for values in SLOT_VALUES[generation].values() for v in values}
    g, rng = grammar.Grammar(generation), np.random.default_rng(generation)
    for _ in range(200):
        text, intent = g.sample(rng)
        padded = f" {text} "
        assert intent in new_intents or any(f" {v} " in padded or f" {v}'s " in padded
                                            for v in new_values), text


def test_replay_needs_an_earlier_generation():
    with pytest.raises(ValueError, match="replay"):
        grammar.Grammar(0).sample(np.random.default_rng(0), fresh=False)


def test_new_words_are_those_a_generation_adds():
    """The words an update must teach: producible at g, not at g-1; the Olympics names
    (Ledecky, Kalisz) arrive with g1."""
    assert grammar.Grammar(0).new_words() == set()
    for g in range(1, grammar.NUM_GENERATIONS):
        new = grammar.Grammar(g).new_words()
        assert new and new <= grammar.Grammar(g).vocabulary()
        assert not new & grammar.Grammar(g - 1).vocabulary()
    assert {"ledecky", "kalisz", "ledecky's"} <= grammar.Grammar(1).new_words()
    assert "ledecky" not in grammar.Grammar(2).new_words()  # not new twice
