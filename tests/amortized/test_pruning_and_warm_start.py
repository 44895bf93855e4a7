"""Sparse branches pruned gradually (`amnet.amortized.pruning`) and branches initialized from
a dense run (`amnet.amortized.warm_start`)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet.amortized import pruning, warm_start
from amnet.rnnt import flops
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


def test_block_pruning_keeps_the_same_strongest_blocks_in_every_output_group():
    branches = ("dense", "sparse(0.75,4x8)")  # a [20, 40] kernel: 5 blocks x 5 groups
    config = ml_collections.ConfigDict({"start_step": 2, "end_step": 10, "every": 2})
    prune = jax.jit(pruning.make_pruner(branches, config))
    rng = np.random.default_rng(1)
    kernel = jnp.asarray(rng.normal(size=(20, 40)), jnp.float32)
    params = {"encoder": {"branch_0": {"layers_0": {"input_kernel": kernel}},
                          "branch_1": {"layers_0": {"input_kernel": kernel}}}}
    kept_per_step = []
    for step in range(1, 15):
        params = prune(jax.tree.map(lambda x: x + 0.01, params), params, jnp.asarray(step))
        blocks = np.asarray(params["encoder"]["branch_1"]["layers_0"]["input_kernel"]).reshape(
            5, 4, 5, 8)
        live = np.any(blocks != 0, axis=(1, 3))  # [blocks, groups]
        assert np.all(np.all(blocks != 0, axis=(1, 3)) == live)  # whole blocks, or nothing
        assert len(set(live.sum(axis=0))) == 1  # balanced: every group keeps as many
        kept_per_step.append(int(live[:, 0].sum()))
    assert kept_per_step[0] == 5 and kept_per_step[-1] == 1 == round(0.25 * 5)
    assert kept_per_step == sorted(kept_per_step, reverse=True) and 1 < kept_per_step[4] < 5
    assert pruning.measured_sparsity(params, branches)["branch_1"] == pytest.approx(0.8)
    # The first pruning keeps the blocks of largest norm in each group.
    first = pruning.block_prune(kernel, 0.6, flops.LinearSpec.parse("sparse(0.6,4x8)"))
    norms = np.linalg.norm(np.asarray(kernel).reshape(5, 4, 5, 8), axis=(1, 3))
    live = np.any(np.asarray(first).reshape(5, 4, 5, 8) != 0, axis=(1, 3))
    np.testing.assert_array_equal(live, norms >= np.sort(norms, axis=0)[-2])  # top 2 of 5
    with pytest.raises(ValueError, match=r"\[20, 40\] kernel does not split into"):
        pruning.block_prune(kernel, 0.5, flops.LinearSpec.parse("sparse(0.5,3x8)"))


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
