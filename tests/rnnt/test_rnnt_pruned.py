"""Pruned RNN-T loss: exact at full range, simple joint and occupation, window bounds."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet import build
from amnet.rnnt import loss as rnnt
from amnet.rnnt import objective
from amnet.rnnt import pruned_loss as rnnt_pruned
from amnet.rnnt.transducer import Transducer, TransducerConfig

B, T, U, H, V = 3, 9, 5, 6, 7


def _inputs(seed=0, scale=1.0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 7)
    return dict(
        enc_proj=jax.random.normal(keys[0], (B, T, H)) * scale,
        pred_proj=jax.random.normal(keys[1], (B, U + 1, H)) * scale,
        output_kernel=jax.random.normal(keys[2], (H, V)),
        output_bias=jax.random.normal(keys[3], (V,)) * 0.1,
        am=jax.random.normal(keys[4], (B, T, V)),
        lm=jax.random.normal(keys[5], (B, U + 1, V)),
        logit_lengths=jnp.array([T, 6, 4]),
        targets=jax.random.randint(keys[6], (B, U), 1, V),
        target_lengths=jnp.array([U, 3, 0]),
    )


def _full(x):
    logits = rnnt.joint_logits(x["enc_proj"], x["pred_proj"], x["output_kernel"],
                               x["output_bias"])
    return rnnt.rnnt_loss(logits, x["logit_lengths"], x["targets"], x["target_lengths"])


_loss = jax.jit(rnnt_pruned.rnnt_loss_pruned, static_argnames=("s_range", "blank"))


def _pruned(x, s_range):
    return _loss(**x, s_range=s_range)


DIFFERENTIABLE = ("enc_proj", "pred_proj", "output_kernel", "output_bias")


def test_full_range_equals_the_exact_loss_in_values_and_gradients():
    x = _inputs()
    for s_range in (U + 1, U + 4):
        costs = _pruned(x, s_range)
        np.testing.assert_allclose(costs.pruned, _full(x), rtol=1e-5, atol=1e-4)
        assert costs.feasible.all() and not costs.s_begin.any()

    def total(fn, params):
        return fn({**x, **params}).sum()

    params = {k: x[k] for k in DIFFERENTIABLE}
    want = jax.jit(jax.grad(lambda p: total(_full, p)))(params)
    got = jax.jit(jax.grad(lambda p: total(lambda y: _pruned(y, U + 1).pruned, p)))(params)
    for name in DIFFERENTIABLE:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_simple_joint_equals_the_exact_loss_of_its_materialized_logits():
    x = _inputs(1)
    logits = x["am"][:, :, None, :] + x["lm"][:, None, :, :]  # [B, T, U+1, V]

    def exact(am, lm):
        return rnnt.rnnt_loss(am[:, :, None, :] + lm[:, None, :, :], x["logit_lengths"],
                              x["targets"], x["target_lengths"]).sum()

    def simple(am, lm):
        return _pruned({**x, "am": am, "lm": lm}, 3).simple.sum()

    np.testing.assert_allclose(
        _pruned(x, 3).simple,
        rnnt.rnnt_loss(logits, x["logit_lengths"], x["targets"], x["target_lengths"]),
        rtol=1e-5, atol=1e-4)
    for got, want in zip(jax.jit(jax.grad(simple, (0, 1)))(x["am"], x["lm"]),
                         jax.jit(jax.grad(exact, (0, 1)))(x["am"], x["lm"]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_simple_normalizer_survives_sides_that_peak_at_different_tokens():
    am = jnp.array([[[60.0, -60.0, 0.0]]])  # [B=1, T=1, V=3]
    lm = jnp.array([[[-60.0, 60.0, 0.0]]])  # [B=1, U+1=1, V=3]
    blank, emit = rnnt_pruned.simple_lattice(am, lm, jnp.zeros((1, 0), jnp.int32))
    assert np.isfinite(blank).all() and np.isfinite(emit).all() and float(blank[0, 0, 0]) < 0


def test_occupation_is_a_distribution_on_every_diagonal():
    """Every alignment visits one node per anti-diagonal t + u = n, n < T_b + U_b."""
    x = _inputs(2)
    blank, emit = rnnt_pruned.simple_lattice(x["am"], x["lm"], x["targets"])
    _, occupancy = jax.jit(rnnt_pruned.occupation)(blank, emit, x["logit_lengths"],
                                                   x["target_lengths"])
    occupancy = np.asarray(occupancy)
    assert occupancy.min() > -1e-6
    for b in range(B):
        frames, tokens = int(x["logit_lengths"][b]), int(x["target_lengths"][b])
        t, u = np.meshgrid(np.arange(T), np.arange(U + 1), indexing="ij")
        for n in range(frames + tokens):
            on = (t + u == n) & (t < frames) & (u <= tokens)
            assert abs(occupancy[b][on].sum() - 1) < 1e-4, (b, n)
        assert np.abs(occupancy[b][(t >= frames) | (u > tokens)]).sum() < 1e-6


@pytest.mark.parametrize("s_range", [2, 3, 4])
def test_windows_are_monotone_connected_and_reach_both_ends(s_range):
    for seed in range(4):
        x = _inputs(seed, scale=3.0)
        costs = _pruned(x, s_range)
        s_begin = np.asarray(costs.s_begin)
        for b in range(B):
            frames, tokens = int(x["logit_lengths"][b]), int(x["target_lengths"][b])
            top = max(tokens + 1 - s_range, 0)
            starts = s_begin[b, :frames]
            assert starts[0] == 0 and starts.min() >= 0 and starts.max() <= top
            assert (np.diff(starts) >= 0).all() and (np.diff(starts) <= s_range - 1).all()
            assert starts[-1] <= tokens < starts[-1] + s_range  # the final node is inside
        assert costs.feasible.all()
        # Pruning removes alignments: the pruned cost is never below the exact one.
        assert (np.asarray(costs.pruned) >= np.asarray(_full(x)) - 1e-4).all()
        assert np.isfinite(costs.pruned).all()


def test_windows_from_the_full_models_occupation_keep_the_probability_as_they_widen():
    x = _inputs(3)
    logits = rnnt.joint_logits(x["enc_proj"], x["pred_proj"], x["output_kernel"],
                               x["output_bias"])
    blank, emit = rnnt.lattice_from_logits(logits, x["targets"])
    full, occupancy = jax.jit(rnnt_pruned.occupation)(blank, emit, x["logit_lengths"],
                                                      x["target_lengths"])

    @functools.partial(jax.jit, static_argnums=0)
    def pruned(s_range):
        s_begin = rnnt_pruned.prune_ranges(occupancy, x["logit_lengths"], x["target_lengths"],
                                           s_range)
        blank_p, emit_p = rnnt_pruned.pruned_lattice(
            x["enc_proj"], x["pred_proj"], x["output_kernel"], x["output_bias"], x["targets"],
            s_begin, s_range)
        return rnnt.lattice_nll(blank_p, emit_p, x["logit_lengths"], x["target_lengths"])

    gaps = [np.asarray(pruned(s_range) - full) for s_range in (2, 3, 4)]
    # Pruning only removes alignments; windows of 4 of the 6 positions keep > 95% of P(y|x)
    # of this diffuse random model, windows of 2 lose most of it on the long utterance.
    assert all((gap > -1e-4).all() for gap in gaps)
    assert (gaps[2] < 0.05).all() and gaps[0][0] > 1.0 > gaps[2][0]


def test_padding_does_not_change_an_utterances_cost():
    x = _inputs(4)
    costs = _pruned(x, 3)
    pad = {**x,
           "enc_proj": jnp.pad(x["enc_proj"], ((0, 0), (0, 4), (0, 0)), constant_values=7.0),
           "am": jnp.pad(x["am"], ((0, 0), (0, 4), (0, 0)), constant_values=7.0),
           "pred_proj": jnp.pad(x["pred_proj"], ((0, 0), (0, 2), (0, 0)), constant_values=7.0),
           "lm": jnp.pad(x["lm"], ((0, 0), (0, 2), (0, 0)), constant_values=7.0),
           "targets": jnp.pad(x["targets"], ((0, 0), (0, 2)), constant_values=3)}
    padded = _pruned(pad, 3)
    np.testing.assert_allclose(padded.pruned, costs.pruned, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(padded.simple, costs.simple, rtol=1e-5, atol=1e-4)


def test_too_many_tokens_for_the_windows_is_infeasible_and_s_range_1_refused():
    x = _inputs(5)
    x = {**x, "logit_lengths": jnp.array([2, 6, 4]), "target_lengths": jnp.array([5, 3, 0])}
    costs = _pruned(x, 2)  # 5 tokens in 2 frames need windows of >= 4 positions
    assert costs.feasible.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="s_range must be >= 2"):
        _pruned(x, 1)


def test_a_transducer_with_the_pruned_loss_matches_the_fused_one_and_ramps_its_terms():
    fused = TransducerConfig(input_dim=6, vocab_size=5, encoder_layers=1, encoder_hidden=8,
                             embed_dim=4, predictor_hidden=8, joint_dim=8)
    pruned = dataclasses.replace(fused, loss="pruned", prune_range=4)
    rng = np.random.default_rng(1)
    features = jnp.asarray(rng.normal(size=(2, 7, 6)), jnp.float32)
    lengths = jnp.array([7, 6])
    batch = {"tokens": jnp.array([[1, 2, 3], [4, 1, 0]]), "token_lengths": jnp.array([3, 2])}
    args = (features, lengths, batch["tokens"], batch["token_lengths"])
    params = build.transducer(pruned).init(jax.random.key(0), *args)["params"]
    assert {"simple_am", "simple_lm"} <= set(params)
    exact = build.transducer(fused).apply(
        {"params": {k: v for k, v in params.items() if not k.startswith("simple_")}}, *args)
    losses = build.transducer(pruned).apply({"params": params}, *args, method=Transducer.forward)
    # prune_range 4 >= U + 1: the pruned cost is the exact one.
    np.testing.assert_allclose(losses.rnnt, exact, rtol=1e-5, atol=1e-4)
    assert losses.pruned_feasible.all() and (losses.simple > 0).all()
    config = ml_collections.ConfigDict({"simple_scale": 0.5, "pruned_warmup_steps": 100})
    fn = jax.jit(objective.rnnt_objective(build.transducer(pruned), config))
    for step, (a, b) in ((0, (0.1, 1.0)), (50, (0.55, 0.75)), (100, (1.0, 0.5))):
        loss, metrics = fn(params, features, lengths, batch, None, None, step)
        np.testing.assert_allclose(loss, a * losses.rnnt + b * losses.simple, rtol=1e-5)
    assert set(metrics) == {"simple", "pruned_feasible"}
    # A fine-tune of a trained model (pruned_warmup_steps=0) weighs both fully from step 0.
    config.pruned_warmup_steps = 0
    loss, _ = jax.jit(objective.rnnt_objective(build.transducer(pruned), config))(
        params, features, lengths, batch, None, None, 0)
    np.testing.assert_allclose(loss, losses.rnnt + 0.5 * losses.simple, rtol=1e-5)
    with pytest.raises(ValueError, match="loss must be 'fused' or 'pruned'"):
        TransducerConfig(loss="k2")
