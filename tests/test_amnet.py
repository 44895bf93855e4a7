"""AmNet parts: branched encoder, in-scan latency, losses, pruning, warm start, streaming."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet import build
from amnet.amortized import latency, objective, pruning, warm_start
from amnet.rnnt import decoding, flops, streaming
from amnet.rnnt.lstm import LSTM
from amnet.rnnt.transducer import Transducer, TransducerConfig

BRANCHES = ("dense", "sparse(0.5)", "lowrank(3)")


def _model(branches=BRANCHES, processor_flops=2e5):
    config = TransducerConfig(input_dim=12, vocab_size=7, encoder_layers=2, encoder_hidden=16,
                              embed_dim=8, predictor_hidden=16, joint_dim=16,
                              encoder_branches=branches, arbitrator_hidden=8,
                              processor_flops=processor_flops)
    return build.transducer(config)


def _batch(batch=3, frames=30):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(batch, frames, 12)) * 3, jnp.float32)
    lengths = jnp.array([frames, frames - 11, frames - 4][:batch])
    targets = jnp.asarray(rng.integers(1, 7, size=(batch, 5)), jnp.int32)
    return features, lengths, targets, jnp.array([5, 2, 4][:batch])


def _params(model, batch):
    params = model.init(jax.random.key(0), *batch)["params"]
    # A livelier arbitrator than its initialization, so that every branch gets frames.
    arbitrator = params["encoder"]["arbitrator"]
    arbitrator["w2"] = arbitrator["w2"] * 8.0
    return params


def test_branch_specs_parse_and_reject_bad_ones():
    assert flops.LinearSpec.parse("sparse(0.9)") == flops.LinearSpec("sparse", sparsity=0.9)
    assert flops.LinearSpec.parse("lowrank(32)") == flops.LinearSpec("lowrank", rank=32)
    for bad in ("sparse(1.5)", "lowrank(0)", "lowrank", "conv"):
        with pytest.raises(ValueError, match="sparse|rank|spec"):
            flops.LinearSpec.parse(bad)
    with pytest.raises(ValueError, match="butterfly"):
        TransducerConfig(encoder_branches=("dense", "butterfly"))


def test_switch_inference_equals_training_mode_with_the_same_decisions():
    """Frame-by-frame `lax.switch` (one branch run) == the training-mode mixture of all three
    branches when both take the same decisions (zero Gumbel noise = argmax)."""
    model = _model()
    batch = _batch()
    features, lengths = batch[:2]
    params = _params(model, batch)
    trained = model.apply({"params": params}, features, lengths, noise=jnp.zeros(
        (3, 30, 3)), temperature=0.5, method=lambda m, *a, **k: m.encoder(*a, **k))
    outputs, _, trace = trained
    step = jax.jit(lambda x, s: model.apply({"params": params}, x, s,
                                            method=lambda m, x, s: m.encoder.step(x, s)))
    for row in range(3):
        state, _ = model.apply({"params": params}, 1, method=Transducer.initial_state)
        for t in range(int(lengths[row])):
            out, state, branch = step(features[row:row + 1, t], state)
            assert int(branch[0]) == int(jnp.argmax(trace.gates[row, t]))
            np.testing.assert_allclose(out[0], outputs[row, t], atol=1e-5)
    used = np.asarray(trace.gates.sum(axis=(0, 1)))
    assert np.all(used > 0), f"some branch was never chosen: {used}"


def test_in_scan_latency_matches_the_exact_simulator():
    model = _model()
    batch = _batch()
    params = _params(model, batch)
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    assert float(trace.backlog.max()) > 0, "the test processor should fall behind"
    costs = flops.frame_costs(model.config).per_branch
    for row, n in enumerate(np.asarray(batch[1])):
        branches = np.asarray(trace.gates[row, :n].argmax(-1))
        np.testing.assert_allclose(trace.frame_flops[row, :n], np.asarray(costs)[branches])
        exact = latency.simulate(np.asarray(costs)[branches], frame_period_s=0.03,
                                 processor_flops=2e5)
        np.testing.assert_allclose(trace.backlog[row, :n], exact.backlog_s, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(trace.finish[row, :n], exact.finish_s, rtol=1e-5)


def _terms(params, model, batch, config):
    loss_fn = objective.amnet_objective(model, config)
    batch_dict = {"tokens": batch[2], "token_lengths": batch[3]}
    return loss_fn(params, batch[0], batch[1], batch_dict, jnp.arange(batch[0].shape[0]),
                   jax.random.key(1), jnp.asarray(0))


def _amnet_config(amortization, cost=1.0, amr=2.0, upl=0.1):
    return ml_collections.ConfigDict({
        "cost_weight": cost, "amortization": amortization, "amr_weight": amr,
        "backlog_threshold_s": 0.06, "upl_weight": upl,
        "temperature": {"initial": 1.0, "final": 0.1, "decay_steps": 10}})


def _routed_two_branches():
    """(batch, inference routing trace, per-branch frame FLOPs) of a fresh dense/lowrank(3)
    model."""
    model = _model(("dense", "lowrank(3)"))
    batch = _batch()
    params = _params(model, batch)
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    return batch, trace, jnp.asarray(flops.frame_costs(model.config).per_branch, jnp.float32)


def test_amortization_penalty_prefers_the_slow_branch_only_without_backlog():
    """d L_amr / d logits pushes towards the costly branch at frames without backlog and is
    zero at frames with backlog >= beta."""
    batch, trace, branch_flops = _routed_two_branches()

    def amr_of_logits(logits):
        return objective.routing_terms(trace._replace(logits=logits), batch[1], branch_flops,
                                       backlog_threshold_s=0.06,
                                       frame_period_s=0.03)["amortization"].sum()

    grad = np.asarray(jax.grad(amr_of_logits)(trace.logits))
    valid = np.arange(30)[None] < np.asarray(batch[1])[:, None]
    backlogged = np.asarray(trace.backlog) >= 0.06
    assert (valid & backlogged).any() and (valid & ~backlogged).any()
    np.testing.assert_allclose(grad[valid & backlogged], 0.0)
    free = valid & ~backlogged
    # Descending the penalty raises the dense branch's logit relative to the cheap one.
    assert np.all(grad[free][:, 0] - grad[free][:, 1] <= 0)
    assert np.any(grad[free][:, 0] - grad[free][:, 1] < 0)


@pytest.mark.parametrize("amortization", ["amr", "upl", "none"])
def test_objective_terms_reach_the_arbitrator(amortization):
    model = _model()
    batch = _batch()
    params = _params(model, batch)
    config = _amnet_config(amortization)
    loss, metrics = _terms(params, model, batch, config)
    assert loss.shape == (3,) and np.all(np.isfinite(loss))
    assert np.all(np.asarray(loss) >= np.asarray(metrics["rnnt"]))  # the added terms are >= 0
    shares = sum(metrics[f"branch_{k}_frames"] for k in range(3))
    np.testing.assert_allclose(shares, 1.0, rtol=1e-5)
    grads = jax.jit(jax.grad(lambda p: _terms(p, model, batch, config)[0].sum()))(params)
    assert float(jnp.abs(grads["encoder"]["arbitrator"]["w2"]).sum()) > 0
    for k in range(3):
        branch = jax.tree.leaves(grads["encoder"][f"branch_{k}"])
        assert sum(float(jnp.abs(g).sum()) for g in branch) > 0, f"no gradient to branch {k}"


def test_upl_ablation_gradient_follows_the_final_busy_period():
    """The UPL term's gradient w.r.t. the logits is non-zero only while the processor is busy
    up to the last frame."""
    model = _model(("dense", "lowrank(3)"))
    batch = _batch(1)
    params = _params(model, batch)
    config = _amnet_config("upl", cost=0.0)

    def upl(p):
        return _terms(p, model, batch, config)[1]["upl_frames"].sum()

    assert float(jax.jit(upl)(params)) > 0
    gradient = jax.jit(jax.grad(
        lambda p: _terms(p, model, batch, config)[0].sum()
        - _terms(p, model, batch, _amnet_config("none", cost=0.0))[0].sum()))(params)
    assert float(jnp.abs(gradient["encoder"]["arbitrator"]["w2"]).sum()) > 0


def test_gradual_pruning_reaches_the_target_and_keeps_the_mask():
    config = ml_collections.ConfigDict({"start_step": 2, "end_step": 10, "every": 2})
    prune = jax.jit(pruning.make_pruner(("dense", "sparse(0.8)"), config))
    rng = np.random.default_rng(0)
    layer = lambda: {"input_kernel": jnp.asarray(rng.normal(size=(20, 40)), jnp.float32),  # noqa: E731
                     "bias": jnp.ones(40)}
    params = {"encoder": {"branch_0": {"layers_0": layer()},
                          "branch_1": {"layers_0": layer()}}}
    history = []
    for step in range(1, 15):
        updated = jax.tree.map(lambda x: x + 0.01, params)  # every weight moves
        params = prune(updated, params, jnp.asarray(step))
        history.append(pruning.measured_sparsity(params, ("dense", "sparse(0.8)"))["branch_1"])
    assert history[0] == 0.0 and history[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(history, history[1:], strict=False))  # gradual
    assert history[4] < 0.8  # not all at once
    assert float(jnp.sum(params["encoder"]["branch_0"]["layers_0"]["input_kernel"] == 0)) == 0
    assert float(jnp.sum(params["encoder"]["branch_1"]["layers_0"]["bias"] == 0)) == 0
    assert float(pruning.sparsity_at(6, 0.8, config)) == pytest.approx(0.8 * (1 - 0.5 ** 3))


def test_warm_start_copies_dense_and_takes_the_best_low_rank_fit():
    dense_model, model = _model(("dense",)), _model(("dense", "lowrank(3)"))
    batch = _batch()
    dense = dense_model.init(jax.random.key(3), *batch)["params"]
    template = model.init(jax.random.key(0), *batch)["params"]
    params = warm_start.from_dense(template, dense, model.config.encoder_branches)
    source = dense["encoder"]["branch_0"]["layers_0"]["input_kernel"]
    np.testing.assert_array_equal(params["encoder"]["branch_0"]["layers_0"]["input_kernel"],
                                  source)
    low = params["encoder"]["branch_1"]["layers_0"]
    approx = np.asarray(low["input_kernel_u"]) @ np.asarray(low["input_kernel_v"])
    singular = np.linalg.svd(np.asarray(source), compute_uv=False)
    error = np.linalg.norm(np.asarray(source) - approx)
    assert error == pytest.approx(np.sqrt(np.sum(singular[3:] ** 2)), rel=1e-4)  # Eckart-Young
    np.testing.assert_array_equal(params["predictor"]["layers_0"]["bias"],
                                  dense["predictor"]["layers_0"]["bias"])
    with pytest.raises(ValueError, match="single-branch"):
        warm_start.from_dense(template, template, model.config.encoder_branches)


def _xla_step_flops(spec):
    layer = LSTM(240, 256, spec=spec)
    x, carry = jnp.zeros((1, 240)), layer.initial_carry(1)
    params = layer.init(jax.random.key(0), x, carry, method=LSTM.step)
    cost = jax.jit(lambda p, x, c: layer.apply(p, x, c, method=LSTM.step)).lower(
        params, x, carry).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_low_rank_matmul_flops_match_xla():
    """The elementwise work is the same for both layers, so the difference between a dense and
    a low-rank layer is matmuls only: ours and XLA's must agree exactly."""
    low = flops.LinearSpec("lowrank", rank=16)
    ours = flops.lstm_layer_flops(240, 256) - flops.lstm_layer_flops(240, 256, spec=low)
    assert ours == _xla_step_flops(flops.LinearSpec()) - _xla_step_flops(low)


def test_streaming_engine_matches_whole_utterance_decoding():
    model = _model()
    batch = _batch(1, frames=25)
    params = _params(model, batch)
    features = np.asarray(batch[0][0])
    result = streaming.StreamingRecognizer(model, params, max_length=40).run(features)
    tokens, lengths = decoding.greedy_decode(model, params, batch[0], batch[1], max_length=40)
    assert result.tokens == np.asarray(tokens[0, :lengths[0]]).tolist()
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    np.testing.assert_array_equal(result.branches, np.asarray(trace.gates[0].argmax(-1)))
    assert result.frame_seconds.shape == (25,) and np.all(result.frame_seconds > 0)
    costs = np.asarray(flops.frame_costs(model.config).per_branch)
    np.testing.assert_array_equal(result.frame_flops, costs[result.branches])


def test_entropy_term_is_the_routing_entropy_and_descending_it_sharpens_p():
    batch, trace, branch_flops = _routed_two_branches()

    def entropy(logits):
        return objective.routing_terms(trace._replace(logits=logits), batch[1], branch_flops,
                                       backlog_threshold_s=0.06, frame_period_s=0.03)["entropy"]

    ties = jnp.zeros_like(trace.logits)
    np.testing.assert_allclose(entropy(ties), np.log(2.0), rtol=1e-6)
    decided = ties.at[..., 0].set(30.0)
    assert float(entropy(decided).max()) < 1e-9
    # A gradient step on the entropy widens every valid frame's logit gap.
    logits = trace.logits
    step = logits - 0.5 * jax.grad(lambda z: entropy(z).sum())(logits)
    valid = np.arange(logits.shape[1])[None] < np.asarray(batch[1])[:, None]
    gap = lambda z: np.abs(np.asarray(z[..., 0] - z[..., 1]))[valid]  # noqa: E731
    assert np.all(gap(step) >= gap(logits) - 1e-6) and np.any(gap(step) > gap(logits))
