"""Router: one-hot forward, soft gradient, scheduled temperature, argmax at inference."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from amnet.amortized import router


def test_forward_is_one_hot_and_gradient_is_the_soft_samples():
    logits = jnp.array([[0.3, -0.2, 1.0], [2.0, 0.1, -1.0]])
    key = jax.random.key(0)
    gate, probs = router.gumbel_softmax(key, logits, 0.7)
    assert set(np.unique(np.asarray(gate))) == {0.0, 1.0}
    np.testing.assert_array_equal(gate.sum(-1), [1.0, 1.0])
    np.testing.assert_array_equal(np.argmax(gate, -1), np.argmax(probs, -1))
    weights = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    through_gate = jax.grad(lambda z: jnp.sum(router.gumbel_softmax(key, z, 0.7)[0] * weights))
    through_soft = jax.grad(lambda z: jnp.sum(router.gumbel_softmax(key, z, 0.7)[1] * weights))
    np.testing.assert_allclose(through_gate(logits), through_soft(logits), rtol=1e-6)
    assert np.abs(np.asarray(through_gate(logits))).sum() > 0


def test_low_temperature_samples_follow_the_logits():
    logits = jnp.log(jnp.array([0.7, 0.2, 0.1]))
    keys = jax.random.split(jax.random.key(1), 4000)
    gates = jax.vmap(lambda k: router.gumbel_softmax(k, logits, 0.1)[0])(keys)
    np.testing.assert_allclose(gates.mean(0), [0.7, 0.2, 0.1], atol=0.03)  # Gumbel-max trick


def test_temperature_follows_the_optax_schedule():
    config = ml_collections.ConfigDict({"initial": 2.0, "final": 0.05, "decay_steps": 1000})
    schedule = router.temperature_schedule(config)
    assert float(schedule(0)) == pytest.approx(2.0)
    assert float(schedule(500)) == pytest.approx(2.0 * (0.05 / 2.0) ** 0.5, rel=1e-4)
    assert float(schedule(1000)) == pytest.approx(0.05, rel=1e-4)
    assert float(schedule(5000)) == pytest.approx(0.05, rel=1e-4)


def test_inference_is_argmax():
    assert router.route(jnp.array([[0.1, 0.9], [3.0, -1.0]])).tolist() == [1, 0]
