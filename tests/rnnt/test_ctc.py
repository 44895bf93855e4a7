"""CTC head: the loss against a brute-force sum over alignments, infeasible targets, greedy
decoding, and the objective's combination with the RNN-T loss (gradient reaches the encoder)."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet import build
from amnet.rnnt import ctc, objective
from amnet.rnnt.transducer import Transducer, TransducerConfig


def _brute_force(log_probs: np.ndarray, target: list[int], blank: int = 0) -> float:
    """-log sum over every frame labelling whose collapse is `target` (float64)."""
    frames, vocab = log_probs.shape
    total = -np.inf
    for path in itertools.product(range(vocab), repeat=frames):
        collapsed = [s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1])]
        if collapsed == target:
            total = np.logaddexp(total, sum(log_probs[t, s] for t, s in enumerate(path)))
    return -total


def test_loss_equals_the_sum_over_all_alignments_with_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 4)).astype(np.float32)
    lengths = np.array([6, 5, 4])
    targets = np.array([[1, 2, 2], [3, 1, 0], [2, 0, 0]])
    target_lengths = np.array([3, 2, 1])
    costs, feasible = ctc.ctc_loss(jnp.asarray(logits), lengths, targets, target_lengths)
    assert feasible.tolist() == [True, True, True]
    for b in range(3):
        log_probs = jax.nn.log_softmax(logits[b, : lengths[b]].astype(np.float64), axis=-1)
        expected = _brute_force(np.asarray(log_probs), targets[b, : target_lengths[b]].tolist())
        assert float(costs[b]) == pytest.approx(expected, rel=1e-4)


def test_targets_that_do_not_fit_their_frames_are_infeasible_and_cost_nothing():
    # "aab" needs 4 frames (a blank between the two a's); 3 frames cannot carry it.
    targets = jnp.array([[1, 1, 2], [1, 1, 2]])
    lengths = jnp.array([3, 4])
    assert ctc.min_frames(targets, jnp.array([3, 3])).tolist() == [4, 4]
    costs, feasible = ctc.ctc_loss(jnp.zeros((2, 4, 3)), lengths, targets, jnp.array([3, 3]))
    assert feasible.tolist() == [False, True]
    assert float(costs[0]) == 0.0 and float(costs[1]) > 0


def test_greedy_decoding_merges_repeats_and_drops_blanks_and_padding():
    best = [[1, 1, 0, 1, 2, 2, 0, 3], [0, 2, 2, 2, 0, 0, 1, 1]]
    logits = jax.nn.one_hot(jnp.array(best), 4) * 5.0
    tokens, lengths = ctc.greedy_decode(logits, jnp.array([8, 5]))
    assert lengths.tolist() == [4, 1]
    assert tokens[0, :4].tolist() == [1, 1, 2, 3] and tokens[1, :1].tolist() == [2]
    assert int(jnp.abs(tokens[0, 4:]).sum()) == 0


def test_the_ctc_term_trains_the_encoder_and_its_weight_and_warmup_apply():
    config = TransducerConfig(input_dim=6, vocab_size=5, encoder_layers=1, encoder_hidden=8,
                              embed_dim=4, predictor_hidden=8, joint_dim=8, ctc_head=True)
    model = build.transducer(config)
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(2, 7, 6)), jnp.float32)
    lengths = jnp.array([7, 6])
    batch = {"tokens": jnp.array([[1, 2, 3], [4, 1, 0]]), "token_lengths": jnp.array([3, 2])}
    params = model.init(jax.random.key(0), features, lengths, batch["tokens"],
                        batch["token_lengths"])["params"]
    losses = model.apply({"params": params}, features, lengths, batch["tokens"],
                         batch["token_lengths"], method=Transducer.forward)
    loss_config = ml_collections.ConfigDict({"ctc_weight": 0.25, "ctc_only_steps": 10})
    fn = objective.rnnt_objective(model, loss_config)

    @jax.jit
    def total(p, step):
        loss, _ = fn(p, features, lengths, batch, None, None, step)
        return jnp.sum(loss)

    for step, (w_rnnt, w_ctc) in ((3, (0.0, 1.0)), (10, (0.75, 0.25))):
        expected = float(jnp.sum(w_rnnt * losses.rnnt + w_ctc * losses.ctc))
        assert float(total(params, step)) == pytest.approx(expected, rel=1e-5)
    # CTC alone (the warm-up) moves the encoder and its head, not the prediction network.
    grads = jax.grad(total)(params, 3)
    norm = lambda tree: float(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree)))  # noqa: E731
    assert norm(grads["encoder"]) > 0 and norm(grads["ctc_output"]) > 0
    assert norm(grads["predictor"]) == 0.0
    _, metrics = jax.jit(fn)(params, features, lengths, batch, None, None, 10)
    assert set(metrics) == {"rnnt", "ctc", "ctc_feasible"}
