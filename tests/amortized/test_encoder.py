"""The branched encoder (`amnet.amortized.encoder`): specs, switch inference equal to the
training pass, the in-scan latency recursion, low-rank FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet.amortized import latency
from amnet.amortized.costs import frame_costs
from amnet.rnnt import flops
from amnet.rnnt.lstm import LSTM
from amnet.rnnt.transducer import Transducer, TransducerConfig
from tests.amortized.models import amnet_batch, amnet_model, amnet_params


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
    model = amnet_model()
    batch = amnet_batch()
    features, lengths = batch[:2]
    params = amnet_params(model, batch)
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
    model = amnet_model()
    batch = amnet_batch()
    params = amnet_params(model, batch)
    trace = model.apply({"params": params}, *batch[:2], method=Transducer.route)
    assert float(trace.backlog.max()) > 0, "the test processor should fall behind"
    costs = frame_costs(model.config).per_branch
    for row, n in enumerate(np.asarray(batch[1])):
        branches = np.asarray(trace.gates[row, :n].argmax(-1))
        np.testing.assert_allclose(trace.frame_flops[row, :n], np.asarray(costs)[branches])
        exact = latency.simulate(np.asarray(costs)[branches], frame_period_s=0.03,
                                 processor_flops=2e5)
        np.testing.assert_allclose(trace.backlog[row, :n], exact.backlog_s, rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(trace.finish[row, :n], exact.finish_s, rtol=1e-5)


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
