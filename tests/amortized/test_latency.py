"""Latency model: closed forms of DESIGN.md, and the batched JAX simulator against the exact one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amnet.amortized.latency import simulate, simulate_batch

DELTA, P = 0.03, 650e6


def test_design_example_above_real_time():
    """43 MFLOP per frame at 650 MFLOP/s, 333 frames: UPL = T c / P - (T - 1) Delta."""
    result = simulate(np.full(333, 43e6), frame_period_s=DELTA, processor_flops=P)
    assert result.latency_s == pytest.approx(333 * 43e6 / P - 332 * DELTA)
    assert result.latency_s == pytest.approx(12.07, abs=0.005)
    assert result.backlog_s[0] == 0 and np.all(np.diff(result.backlog_s[1:]) > 0)


def test_keeping_up_gives_one_frame_of_compute():
    costs = np.full(100, 10e6)  # 15.4 ms per 30 ms frame
    result = simulate(costs, frame_period_s=DELTA, processor_flops=P)
    assert result.latency_s == pytest.approx(10e6 / P)
    assert not result.backlog_s.any()
    np.testing.assert_allclose(result.finish_s, (np.arange(100) + 1) * DELTA + 10e6 / P)


def test_backlog_drains_when_cheap_frames_follow():
    costs = np.array([60e6] * 20 + [1e6] * 60)  # 1.2 s of backlog, drained at 28 ms a frame
    result = simulate(costs, frame_period_s=DELTA, processor_flops=P)
    assert result.backlog_s.max() > 0.5 and result.backlog_s[-1] == 0
    assert result.latency_s == pytest.approx(1e6 / P)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-empty"):
        simulate([], frame_period_s=DELTA, processor_flops=P)
    with pytest.raises(ValueError, match="non-negative"):
        simulate([1.0, -2.0], frame_period_s=DELTA, processor_flops=P)
    with pytest.raises(ValueError, match="processor_flops"):
        simulate([1.0], frame_period_s=DELTA, processor_flops=0)


def test_batched_simulator_matches_exact_one():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 40e6, size=(5, 80)).astype(np.float32)
    lengths = np.array([80, 1, 37, 60, 5])
    latency, backlog, finish = jax.jit(lambda c, n: simulate_batch(
        c, n, frame_period_s=DELTA, processor_flops=P))(costs, lengths)
    for b, n in enumerate(lengths):
        exact = simulate(costs[b, :n], frame_period_s=DELTA, processor_flops=P)
        assert float(latency[b]) == pytest.approx(exact.latency_s, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(backlog[b, :n], exact.backlog_s, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(finish[b, :n], exact.finish_s, rtol=1e-5)
        assert not np.asarray(backlog[b, n:]).any()


def test_batched_latency_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    costs = jnp.asarray(rng.uniform(15e6, 30e6, size=(1, 30)), jnp.float32)  # partly backlogged
    upl = lambda c: simulate_batch(c, jnp.array([30]), frame_period_s=DELTA,  # noqa: E731
                                   processor_flops=P)[0].sum()
    grad = jax.grad(upl)(costs)
    for t in (0, 10, 29):
        step = jnp.zeros_like(costs).at[0, t].set(1e5)
        numeric = (upl(costs + step) - upl(costs - step)) / 2e5
        assert float(grad[0, t]) == pytest.approx(float(numeric), rel=1e-2, abs=1e-12)
