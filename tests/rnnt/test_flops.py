"""Analytical FLOP counts: the rules, and dense LSTM layers against XLA's cost analysis."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from amnet.rnnt import flops
from amnet.rnnt.lstm import LSTM
from benchmarks import models, utilization


def test_linear_rules():
    assert flops.linear_flops(100, 40) == 8000
    assert flops.linear_flops(100, 40, flops.LinearSpec("sparse", sparsity=0.75)) == 2000
    assert flops.linear_flops(100, 40, flops.LinearSpec("lowrank", rank=8)) == 2 * 8 * 140
    with pytest.raises(ValueError, match="rank"):
        flops.LinearSpec("lowrank")
    with pytest.raises(ValueError, match="sparsity"):
        flops.LinearSpec("sparse", sparsity=1.0)
    with pytest.raises(ValueError, match="kind"):
        flops.LinearSpec("butterfly")
    # Balanced blocks: k = round(0.25 * 100 / 10) = 2 (of 10) blocks of 10 rows in each group.
    blocks = flops.LinearSpec.parse("sparse(0.75,10x20)")
    assert blocks == flops.LinearSpec("sparse", sparsity=0.75, block=(10, 20))
    assert str(blocks) == "sparse(0.75,10x20)" and flops.LinearSpec.parse(str(blocks)) == blocks
    assert flops.block_grid(100, 40, blocks) == (10, 2, 2)
    assert flops.linear_flops(100, 40, blocks) == 2 * 2 * 10 * 40 == 1600
    assert flops.linear_flops(100, 40, flops.LinearSpec.parse("sparse(0.99,10x20)")) == 800
    with pytest.raises(ValueError, match=r"\[100, 30\] kernel does not split"):
        flops.linear_flops(100, 30, blocks)
    with pytest.raises(ValueError, match="block"):
        flops.LinearSpec("lowrank", rank=2, block=(2, 2))


@pytest.mark.parametrize("input_dim, hidden, projection", [(240, 320, None), (320, 320, None),
                                                            (240, 256, 128)])
def test_dense_lstm_step_matches_xla_cost_analysis(input_dim, hidden, projection):
    """XLA counts the same matmuls; it expands sigmoid/tanh into a few more elementwise ops,
    so the totals agree within 1%."""
    layer = LSTM(input_dim, hidden, projection)
    x, carry = jnp.zeros((1, input_dim)), layer.initial_carry(1)
    params = layer.init(jax.random.key(0), x, carry, method=LSTM.step)
    step = jax.jit(lambda p, x, c: layer.apply(p, x, c, method=LSTM.step))
    cost = step.lower(params, x, carry).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ours = flops.lstm_layer_flops(input_dim, hidden, projection)
    assert ours == pytest.approx(cost["flops"], rel=0.01)
    matmuls = ours - flops.lstm_elementwise_flops(hidden)
    assert matmuls / cost["flops"] > 0.99  # the matmuls are what the count is about


def test_encoder_stack():
    per_layer = [flops.lstm_layer_flops(240, 320), flops.lstm_layer_flops(320, 320),
                 flops.lstm_layer_flops(320, 320)]
    assert flops.encoder_frame_flops(240, 320, 3) == sum(per_layer)
    sparse = flops.encoder_frame_flops(240, 320, 3, spec=flops.LinearSpec("sparse", sparsity=0.8))
    assert sparse < 0.25 * sum(per_layer)


def test_hlo_count_takes_loops_by_their_trip_count_where_cost_analysis_does_not():
    """XLA's cost analysis counts a scan's body once; `hlo_matmul_flops` counts it per frame."""
    def recurrence(w, x):
        return jax.lax.scan(lambda c, xt: (jnp.tanh(c @ w + xt), None), jnp.zeros((8, 64)),
                            x)[0].sum()

    compiled = jax.jit(recurrence).lower(jnp.ones((64, 64)), jnp.ones((50, 8, 64))).compile()
    total, by_op = utilization.hlo_matmul_flops(compiled.as_text())
    assert total == 50 * 2 * 8 * 64 * 64 == sum(by_op.values())
    # A conditional counts its dearer branch, in the total and in the breakdown alike.
    def branch(p, w, x):
        return jax.lax.cond(p, lambda: (x @ w @ w).sum(), lambda: (x @ w).sum())

    compiled = jax.jit(branch).lower(True, jnp.ones((64, 64)), jnp.ones((8, 64))).compile()
    total, by_op = utilization.hlo_matmul_flops(compiled.as_text())
    assert total == 2 * (2 * 8 * 64 * 64) == sum(by_op.values())
    with pytest.raises(ValueError, match="ENTRY"):
        utilization.hlo_matmul_flops("not hlo")
    hidden = ('ENTRY %main (a: f32[8,8]) -> f32[8,8] {\n  ROOT %c = f32[8,8]{1,0} custom-call('
              '%a, %a), custom_call_target="__cublas$gemm"\n}')
    with pytest.raises(ValueError, match="hides a matrix product"):
        utilization.hlo_matmul_flops(hidden)


@pytest.mark.parametrize("loss", ["fused", "pruned"])
def test_train_step_flops_match_the_compiled_step(loss):
    """The analytical count of the whole train step (encoder, predictor, CTC head, joint with
    the fused loss's recomputation or the pruned loss's windows and simple joint, backward
    passes, the frontend's filterbank) against the matmuls of the compiled step (equal on
    JAX 0.10.2; 0.1% allowed for a compiler that fuses differently)."""
    bench = models.TrainStep(4, preset="tiny", loss=loss)
    counted = bench.flops()
    assert bench.hlo_flops() == pytest.approx(counted.executed, rel=1e-3)
    # Closed forms of the tiny config (1x64 LSTM encoder on 240-dim stacked features, joint
    # 64, 29 characters) on its one bucket: 4 utterances, 166 frames, 72 labels.
    c = bench.model.config
    assert (c.input_dim, c.encoder_hidden, c.joint_dim, c.vocab_size) == (240, 64, 64, 29)
    assert (bench.frames, bench.labels) == (166, 72)
    assert counted.forward["encoder"] == 4 * 166 * (2 * 240 * 256 + 2 * 64 * 256)
    # The first layer's input gradient is not taken: the recurrent product's backward is
    # twice its forward, the input product's once (its weight gradient).
    assert counted.backward["encoder"] == 4 * 166 * (2 * 240 * 256 + 2 * 2 * 64 * 256)
    if loss == "fused":  # one frame per chunk: the joint once more (recomputed), no padding
        assert c.loss_frames_per_chunk == 1
        assert counted.recomputed == counted.forward["joint"] == 4 * 166 * 73 * 2 * 64 * 29
    else:  # 5 tokens per frame
        assert counted.recomputed == 0 and counted.forward["joint"] == 4 * 166 * 5 * 2 * 64 * 29
    without_ctc = flops.train_step_flops(bench.model.config, 4, bench.frames, bench.labels,
                                         ctc=False)
    assert without_ctc.model == (counted.model - 3 * counted.forward["ctc_output"]
                                 - 2 * counted.forward["ctc_labels"])
    with pytest.raises(ValueError, match="one dense encoder"):
        flops.train_step_flops(dataclasses.replace(
            bench.model.config, encoder_branches=("dense", "lowrank(4)")), 4, 10, 5)
