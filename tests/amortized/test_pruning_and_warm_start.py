"""Sparse branches pruned gradually (`amnet.amortized.pruning`) and branches initialized from
a dense run (`amnet.amortized.warm_start`)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet.amortized import pruning, warm_start
from tests.amortized.models import amnet_batch, amnet_model


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
    dense_model, model = amnet_model(("dense",)), amnet_model(("dense", "lowrank(3)"))
    batch = amnet_batch()
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
