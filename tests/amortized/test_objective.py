"""AmNet's objective (`amnet.amortized.objective`): cost, amortization, UPL ablation and
entropy terms and their gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet.amortized import objective
from amnet.amortized.costs import frame_costs
from amnet.rnnt.transducer import Transducer
from tests.amortized.models import amnet_batch, amnet_model, amnet_params


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
    model = amnet_model(("dense", "lowrank(3)"))
    batch = amnet_batch()
    params = amnet_params(model, batch)
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    return batch, trace, jnp.asarray(frame_costs(model.config).per_branch, jnp.float32)


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
    model = amnet_model()
    batch = amnet_batch()
    params = amnet_params(model, batch)
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
    model = amnet_model(("dense", "lowrank(3)"))
    batch = amnet_batch(1)
    params = amnet_params(model, batch)
    config = _amnet_config("upl", cost=0.0)

    def upl(p):
        return _terms(p, model, batch, config)[1]["upl_frames"].sum()

    assert float(jax.jit(upl)(params)) > 0
    gradient = jax.jit(jax.grad(
        lambda p: _terms(p, model, batch, config)[0].sum()
        - _terms(p, model, batch, _amnet_config("none", cost=0.0))[0].sum()))(params)
    assert float(jnp.abs(gradient["encoder"]["arbitrator"]["w2"]).sum()) > 0


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
