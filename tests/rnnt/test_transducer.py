"""The RNN-T model: streaming equals whole-sequence computation; decoders; a learning test."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from amnet import build
from amnet.data import input_pipeline as ip
from amnet.data.text import CharTokenizer
from amnet.evaluation.metrics import word_errors
from amnet.rnnt import decoding, frontend
from amnet.rnnt.lstm import LSTMStack
from amnet.rnnt.predictor import StatelessPredictor
from amnet.rnnt.transducer import Transducer, TransducerConfig
from tests.helpers import tiny_name

SMALL = TransducerConfig(input_dim=12, vocab_size=7, encoder_layers=2, encoder_hidden=16,
                         embed_dim=8, predictor_hidden=16, joint_dim=16)


def _batch(seed=0, batch=3, frames=9, labels=4):
    keys = jax.random.split(jax.random.key(seed), 2)
    features = jax.random.normal(keys[0], (batch, frames, SMALL.input_dim))
    targets = jax.random.randint(keys[1], (batch, labels), 1, SMALL.vocab_size)
    return features, jnp.array([frames, 5, 1]), targets, jnp.array([labels, 0, 2])


@pytest.mark.parametrize("projection", [None, 6])
def test_lstm_steps_equal_the_sequence_and_stop_at_length(projection):
    stack = LSTMStack(input_dim=5, hidden=8, num_layers=2, projection=projection)
    x = jax.random.normal(jax.random.key(0), (2, 7, 5))
    lengths = jnp.array([7, 4])
    params = stack.init(jax.random.key(1), x, lengths)
    outputs, final = stack.apply(params, x, lengths)
    carries = stack.apply(params, 2, method=LSTMStack.initial_carry)
    for t in range(7):
        y_t, carries = stack.apply(params, x[:, t], carries, method=LSTMStack.step)
        np.testing.assert_allclose(outputs[0, t], y_t[0], atol=1e-5)
        if t < 4:
            np.testing.assert_allclose(outputs[1, t], y_t[1], atol=1e-5)
        if t == 3:  # the second utterance ends here: its final carry is this one
            for (h, c), (h_ref, c_ref) in zip(final, carries, strict=True):
                np.testing.assert_allclose(h[1], h_ref[1], atol=1e-5)
                np.testing.assert_allclose(c[1], c_ref[1], atol=1e-5)
    assert not np.any(outputs[1, 4:])
    assert outputs.shape == (2, 7, projection or 8)


def test_stateless_predictor_steps_equal_the_sequence_and_see_only_its_context():
    predictor = StatelessPredictor(input_dim=5, hidden=7, context=3)
    x = jax.random.normal(jax.random.key(0), (2, 6, 5))
    lengths = jnp.array([6, 4])
    params = predictor.init(jax.random.key(1), x, lengths)
    outputs, final = predictor.apply(params, x, lengths)
    carry = predictor.apply(params, 2, method=StatelessPredictor.initial_carry)
    for t in range(6):
        y_t, carry = predictor.apply(params, x[:, t], carry, method=StatelessPredictor.step)
        np.testing.assert_allclose(outputs[0, t], y_t[0], atol=1e-6)
        if t == 3:  # the second sequence ends here: its final window is this one
            np.testing.assert_allclose(final[1], carry[1], atol=1e-6)
    assert not np.any(outputs[1, 4:])
    # Position 5 sees inputs 3..5 only: changing input 2 leaves it unchanged.
    changed = x.at[:, 2].add(1.0)
    again, _ = predictor.apply(params, changed, lengths)
    np.testing.assert_allclose(again[0, 5], outputs[0, 5], atol=1e-6)
    assert not np.allclose(again[0, 4], outputs[0, 4])


@pytest.mark.parametrize("projection", [None, 5])
def test_hand_written_lstm_backward_equals_autodiff_of_the_scan(projection, monkeypatch):
    """`amnet.rnnt.lstm_recurrence`: same outputs, final carry and gradients (inputs, kernels,
    initial carry) as autodiff of the plain scan, with padded frames and a projection."""
    from amnet.rnnt import lstm

    stacks = {hand_written: LSTMStack(6, 8, 2, projection, hand_written_backward=hand_written)
              for hand_written in (True, False)}
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 9, 6)), jnp.float32)
    lengths = jnp.array([9, 4, 1])
    weights = jnp.asarray(rng.normal(size=(3, 9, projection or 8)), jnp.float32)
    params = stacks[True].init(jax.random.key(0), x, lengths)["params"]

    def loss(params, x, stack):
        out, carries = stack.apply({"params": params}, x, lengths)
        h, c = carries[-1]
        return jnp.sum(out * weights) + jnp.sum(h ** 2) + jnp.sum(jnp.sin(c))

    calls = []
    recurrence = lstm.lstm_recurrence.recurrence
    monkeypatch.setattr(lstm.lstm_recurrence, "recurrence",
                        lambda *a: calls.append(1) or recurrence(*a))
    results = {}
    for hand_written, stack in stacks.items():
        results[hand_written] = jax.value_and_grad(loss, argnums=(0, 1))(params, x, stack)
    assert len(calls) == 2  # both layers took the hand-written path, once
    (value, grads), (ref_value, ref_grads) = results[True], results[False]
    assert value == pytest.approx(float(ref_value), rel=1e-6)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(path))


def test_streaming_encoder_equals_whole_utterance():
    model = build.transducer(SMALL)
    features, lengths, targets, target_lengths = _batch()
    params = model.init(jax.random.key(0), features, lengths, targets, target_lengths)
    whole, _ = model.apply(params, features, lengths, method=Transducer.encode)
    carries, _ = model.apply(params, 3, method=Transducer.initial_state)
    for t in range(features.shape[1]):
        frame, carries, _ = model.apply(params, features[:, t], carries,
                                        method=Transducer.encode_step)
        np.testing.assert_allclose(whole[0, t], frame[0], atol=1e-5)


def test_fused_and_materialized_model_losses_agree():
    model = build.transducer(SMALL)
    features, lengths, targets, target_lengths = _batch(1)
    params = model.init(jax.random.key(0), features, lengths, targets, target_lengths)
    fused = model.apply(params, features, lengths, targets, target_lengths)
    naive = model.apply(params, features, lengths, targets, target_lengths, fused=False)
    np.testing.assert_allclose(fused, naive, rtol=1e-5)


@pytest.mark.parametrize("predictor", ["lstm", "stateless"])
def test_streaming_greedy_equals_batch_greedy_and_beam_of_one(predictor):
    model = build.transducer(dataclasses.replace(SMALL, predictor=predictor))
    features, lengths, targets, target_lengths = _batch(2)
    params = model.init(jax.random.key(3), features, lengths, targets, target_lengths)["params"]
    tokens, counts = decoding.greedy_decode(model, params, features, lengths, max_length=20,
                                            max_symbols_per_frame=1)
    enc, _ = model.apply({"params": params}, features, lengths, method=Transducer.encode)
    state = decoding.greedy_init(model, params, 3, 20)
    emitted = []
    for t in range(features.shape[1]):
        before = state.lengths
        state = decoding.greedy_step(model, params, state, enc[:, t], t < lengths,
                                     max_symbols_per_frame=1)
        emitted.append(state.lengths - before)
    np.testing.assert_array_equal(state.tokens, tokens)
    np.testing.assert_array_equal(state.lengths, counts)
    # Where greedy decoding emitted: per frame, nothing past an utterance's end.
    _, _, alignment = decoding.greedy_alignment(model, params, features, lengths, max_length=20,
                                                max_symbols_per_frame=1)
    np.testing.assert_array_equal(alignment, np.stack(emitted, axis=1))
    np.testing.assert_array_equal(alignment.sum(1), counts)
    assert int(alignment[1, 5:].sum()) == 0 and int(alignment.sum()) > 0


def test_wide_beam_finds_the_most_probable_sequence():
    """With room for every candidate, beam search is exact: its best hypothesis and score are
    the arg-max and max of P(y | x) (summed over alignments) over all label sequences."""
    config = TransducerConfig(input_dim=4, vocab_size=3, encoder_layers=1, encoder_hidden=8,
                              embed_dim=4, predictor_hidden=8, joint_dim=8)
    model = build.transducer(config)
    features = jax.random.normal(jax.random.key(5), (1, 3, 4))
    lengths = jnp.array([3])
    params = model.init(jax.random.key(6), features, lengths, jnp.ones((1, 1), jnp.int32),
                        jnp.array([1]))["params"]
    max_len = 3  # sequences over labels {1, 2} of length <= 3: 15 of them, beam 16 holds all
    sequences = [s for n in range(max_len + 1) for s in itertools.product((1, 2), repeat=n)]
    cost = jax.jit(lambda y, n: model.apply({"params": params}, features, lengths, y, n))
    log_probs = [-float(cost(jnp.array([list(seq) + [1] * (max_len - len(seq))], jnp.int32),
                             jnp.array([len(seq)]))[0]) for seq in sequences]
    best = int(np.argmax(log_probs))
    tokens, count = decoding.beam_decode(model, params, features, lengths, beam=16,
                                         max_length=max_len, max_symbols_per_frame=max_len)
    assert tuple(np.asarray(tokens[0, : int(count[0])])) == sequences[best]
    state = decoding.beam_init(model, params, 1, 16, max_len)
    enc, _ = model.apply({"params": params}, features, lengths, method=Transducer.encode)
    for t in range(3):
        state = decoding.beam_step(model, params, state, enc[:, t], jnp.array([True]),
                                   max_symbols_per_frame=max_len)
    np.testing.assert_allclose(float(state.scores.max()), log_probs[best], rtol=1e-4)


def _eight_utterances(data_dir):
    tokenizer = CharTokenizer()
    source = ip.open_source(tiny_name(0), "train", data_dir)
    examples = sorted((source[i] for i in range(len(source))), key=lambda e: len(e["speech"]))[:8]
    texts = [e["text"].decode() for e in examples]
    audio = np.zeros((8, max(len(e["speech"]) for e in examples)), np.int16)
    tokens = np.zeros((8, max(len(t) for t in texts)), np.int32)
    for i, (example, text) in enumerate(zip(examples, texts, strict=True)):
        audio[i, : len(example["speech"])] = example["speech"]
        tokens[i, : len(text)] = tokenizer.encode(text)
    features, lengths = frontend.featurize(audio, np.array([len(e["speech"]) for e in examples]))
    features = (features - features.mean()) / features.std()
    return features, lengths, jnp.asarray(tokens), jnp.array([len(t) for t in texts]), texts


def test_overfits_eight_utterances_and_greedy_recovers_them(tiny_data_dir):
    """A real learning test: 8 spoken commands, loss falls, greedy decoding is exact."""
    features, lengths, tokens, token_lengths, texts = _eight_utterances(tiny_data_dir)
    tokenizer = CharTokenizer()
    config = TransducerConfig(vocab_size=tokenizer.vocab_size, encoder_layers=2,
                              encoder_hidden=128, embed_dim=32, predictor_hidden=64,
                              joint_dim=64)
    model = build.transducer(config)
    params = model.init(jax.random.key(0), features, lengths, tokens, token_lengths)["params"]
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(2e-3))
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: model.apply(
            {"params": p}, features, lengths, tokens, token_lengths).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    first_loss = None
    for _ in range(350):
        params, opt_state, loss = train_step(params, opt_state)
        first_loss = first_loss or float(loss)
    assert float(loss) < first_loss / 20
    out, counts = decoding.greedy_decode(model, params, features, lengths, max_length=48)
    hypotheses = [tokenizer.decode(o[:n]) for o, n in zip(np.asarray(out), np.asarray(counts),
                                                         strict=True)]
    assert hypotheses == texts
    beam, beam_counts = decoding.beam_decode(model, params, features, lengths, max_length=48)
    beam_texts = [tokenizer.decode(o[:n]) for o, n in zip(np.asarray(beam),
                                                         np.asarray(beam_counts), strict=True)]
    assert word_errors(texts, beam_texts).rate <= 0.05, beam_texts
