"""The n-gram LM and lexicon automata (`amnet.rnnt.lm`) and their shallow fusion in beam search."""

import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet import build
from amnet.data.text import CharTokenizer
from amnet.rnnt import decoding, lm
from amnet.rnnt.transducer import TransducerConfig


def test_bigram_scores_a_sentence_as_hand_computed_kneser_ney():
    # Vocabulary: 0 = end, 1 = a, 2 = b. Sentences "a b" and "b".
    model = lm.build_ngram([[1, 2], [2]], vocab_size=3, order=2)
    # Bigram counts after the start: a 1, b 1; after a: b 1; after b: end 2. Discounts:
    # bigram counts {1, 1, 1, 2} -> D2 = 3 / (3 + 2) = 0.6; unigram continuation counts
    # {a: 1, b: 2, end: 1} -> D1 = 2 / (2 + 2) = 0.5.
    # P1: a (0.5 + 0.5 * 3 / 3) / 4 = 0.25, b (1.5 + 0.5) / 4 = 0.5, end 0.25.
    # P(a | <s>) = (0.4 + 0.6 * 2 * 0.25) / 2 = 0.35, P(b | a) = 0.4 + 0.6 * 0.5 = 0.7,
    # P(end | b) = (1.4 + 0.6 * 0.25) / 2 = 0.775.
    assert lm.score(model, [1, 2]) == pytest.approx(math.log(0.35 * 0.7 * 0.775), rel=1e-6)
    # "b a": P(b | <s>) = (0.4 + 0.6 * 2 * 0.5) / 2 = 0.5, P(a | b) = 0.6 * 0.25 / 2 = 0.075,
    # P(end | a) = 0.6 * 0.25 = 0.15.
    assert lm.score(model, [2, 1]) == pytest.approx(math.log(0.5 * 0.075 * 0.15), rel=1e-6)
    np.testing.assert_allclose(np.exp(model.log_probs).sum(axis=1), 1.0, rtol=1e-6)


def _reference_kn(sentences, vocab_size, order):
    """Interpolated Kneser-Ney written directly over the full history (no automaton)."""
    bos, context = vocab_size, order - 1
    levels = [collections.defaultdict(collections.Counter) for _ in range(order)]
    for s in sentences:
        padded = (bos,) * context + tuple(s) + (0,)
        for i in range(context, len(padded)):
            levels[context][padded[i - context: i]][padded[i]] += 1
    for k in range(context, 0, -1):
        for h, row in levels[k].items():
            for v in row:
                levels[k - 1][h[1:]][v] += 1

    def discount(level):
        counts = collections.Counter(c for row in level.values() for c in row.values())
        n1, n2 = counts.get(1, 0), counts.get(2, 0)
        return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5

    discounts = [discount(level) for level in levels]

    def prob(v, h):
        lower = prob(v, h[1:]) if h else 1.0 / vocab_size
        row = levels[len(h)].get(h)
        if not row:
            return lower
        total = sum(row.values())
        return (max(row.get(v, 0) - discounts[len(h)], 0) + discounts[len(h)] * len(row)
                * lower) / total

    def score(tokens):
        padded = (bos,) * context + tuple(tokens) + (0,)
        return sum(math.log(prob(padded[i], padded[i - context: i]))
                   for i in range(context, len(padded)))

    return score


def test_higher_orders_fold_back_off_into_the_automaton_exactly():
    rng = np.random.default_rng(0)
    words = [rng.integers(1, 6, size=rng.integers(1, 4)).tolist() for _ in range(12)]
    sentences = [sum((words[i] + [6] for i in rng.integers(0, 12, size=rng.integers(1, 5))),
                     [])[:-1] for _ in range(40)]
    reference = _reference_kn(sentences, vocab_size=7, order=4)
    model = lm.build_ngram(sentences, vocab_size=7, order=4)
    unseen = [rng.integers(1, 7, size=rng.integers(1, 12)).tolist() for _ in range(20)]
    for sentence in sentences[:10] + unseen:  # seen sentences and unseen contexts alike
        assert lm.score(model, sentence) == pytest.approx(reference(sentence), rel=1e-5)


def test_files_round_trip_and_bad_files_are_named(tmp_path):
    model = lm.build_ngram([[1, 2, 3], [3, 2]], vocab_size=4, order=3)
    lm.save(tmp_path / "lm.safetensors", model, tokenizer="char")
    loaded = lm.load(tmp_path / "lm.safetensors", vocab_size=4)
    np.testing.assert_array_equal(loaded.log_probs, model.log_probs)
    np.testing.assert_array_equal(loaded.next_state, model.next_state)
    assert (loaded.start, loaded.kind, loaded.info["order"]) == (model.start, "ngram", 3)
    with pytest.raises(ValueError, match="scores 4 tokens, the model has 29"):
        lm.load(tmp_path / "lm.safetensors", vocab_size=29)
    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read automaton file .*junk"):
        lm.load(tmp_path / "junk")
    with pytest.raises(ValueError, match="sentence 1: token ids"):
        lm.build_ngram([[1], [0, 2]], vocab_size=4, order=2)


def _tiny_model(vocab=29):
    config = TransducerConfig(input_dim=6, vocab_size=vocab, encoder_layers=1, encoder_hidden=12,
                              embed_dim=6, predictor_hidden=12, joint_dim=12)
    model = build.transducer(config)
    rng = np.random.default_rng(2)
    features = jnp.asarray(rng.normal(size=(3, 14, 6)), jnp.float32)
    lengths = jnp.array([14, 11, 9])
    params = model.init(jax.random.key(1), features, lengths, jnp.ones((3, 4), jnp.int32),
                        jnp.full((3,), 4))["params"]
    # Bias the joint toward emitting, so that hypotheses have several words.
    params["output_bias"] = params["output_bias"].at[0].add(-2.0)
    return model, params, features, lengths


def test_fusion_with_zero_weight_is_plain_beam_search():
    model, params, features, lengths = _tiny_model()
    tokenizer = CharTokenizer()
    sentences = [tokenizer.encode(t) for t in ("set a timer", "call mom", "play music")]
    fusion = decoding.Fusion.of([lm.build_ngram(sentences, 29, 3)], [0.0], 0.0)
    plain = decoding.beam_decode(model, params, features, lengths, beam=4, max_length=20)
    fused = decoding.beam_decode(model, params, features, lengths, beam=4, max_length=20,
                                 fusion=fusion)
    for a, b in zip(plain, fused, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_lexicon_keeps_every_word_of_the_output_in_the_lexicon():
    model, params, features, lengths = _tiny_model()
    tokenizer = CharTokenizer()
    texts = ("set a timer", "call mom", "play the music", "turn it on")
    sentences = [tokenizer.encode(t) for t in texts]
    lexicon = lm.build_lexicon(sentences, 29, separator=int(tokenizer.encode("a b")[1]))
    words = {w for t in texts for w in t.split()}
    assert lexicon.info["words"] == len(words)
    fusion = decoding.Fusion.of([lexicon], [1.0], 2.0)
    tokens, counts = decoding.beam_decode(model, params, features, lengths, beam=8,
                                          max_length=24, fusion=fusion)
    hypotheses = [tokenizer.decode(np.asarray(t[:n])) for t, n in zip(tokens, counts,
                                                                       strict=True)]
    assert any(hypotheses)
    for h in hypotheses:
        assert set(h.split()) <= words, h


def test_the_context_automaton_keeps_completed_phrases_and_takes_back_partial_ones():
    # Phrases "a b c" and "b c" over tokens 1..5 (0 = end).
    context = lm.build_context([[1, 2, 3], [2, 3]], vocab_size=6)
    assert lm.score(context, [1, 2, 3]) == 3.0  # one completed phrase: its 3 tokens
    assert lm.score(context, [5, 2, 3, 4]) == 2.0  # "b c" inside other tokens
    assert lm.score(context, [1, 2, 3, 1, 2, 3]) == 6.0  # twice
    assert lm.score(context, [1, 2, 4]) == 0.0  # broken off: the bonus is taken back
    assert lm.score(context, [1, 2]) == 0.0  # unfinished at the end: taken back too
    # During the search a hypothesis inside a match carries its bonus: +1 per matched token.
    state, running = context.start, []
    for t in (1, 2):
        running.append(float(context.log_probs[state, t]))
        state = int(context.next_state[state, t])
    assert running == [1.0, 1.0]
    # At word starts only (token 5 = the space): at the utterance's start and after a space
    # a phrase earns its tokens, inside a word nothing; the space itself earns nothing.
    assert lm.space_token(("", "a", " ", "b")) == 2
    assert lm.space_token(("", "\u2581the", "s")) is None  # wordpieces mark word starts
    words = lm.build_context([[2, 3]], vocab_size=6, boundary=5)
    assert lm.score(words, [1, 4]) == lm.score(words, []) == 0.0
    assert lm.score(words, [2, 3]) == lm.score(words, [1, 5, 2, 3]) == 2.0
    assert lm.score(words, [1, 2, 3]) == lm.score(words, [1, 5, 2, 4]) == 0.0
    assert not np.any(words.log_probs[:, 5] > 0)  # no bonus for a space
    empty = lm.build_context([], vocab_size=6)
    assert not np.any(empty.log_probs) and lm.score(empty, [1, 2, 3]) == 0.0
    with pytest.raises(ValueError, match="empty phrase"):
        lm.build_context([[1], []], vocab_size=6)
    with pytest.raises(ValueError, match="outside 1..5"):
        lm.build_context([[1, 6]], vocab_size=6)
