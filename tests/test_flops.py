"""Analytical FLOP counts: the rules, and dense LSTM layers against XLA's cost analysis."""

import jax
import jax.numpy as jnp
import pytest

from amnet import flops
from amnet.lstm import LSTM


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
