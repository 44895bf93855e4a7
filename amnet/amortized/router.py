"""Straight-through Gumbel-softmax router over encoder branches.

Training: y = softmax((z + G) / τ) with G ~ Gumbel(0, 1); the forward pass uses the hard one-hot
onehot(argmax y), the backward pass the gradient of y (straight-through estimator). τ comes from
an optax schedule of the training step, annealed so that routing becomes binary.
Inference: argmax z, no noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def temperature_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """τ(step): exponential decay from `initial` to `final` over `decay_steps`, then constant."""
    rate = config.final / config.initial
    return optax.exponential_decay(init_value=config.initial, transition_steps=config.decay_steps,
                                   decay_rate=rate, end_value=config.final)


def straight_through(logits: jax.Array, noise: jax.Array,
                     temperature: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """Returns (gate, soft) for `logits` `[..., K]` and Gumbel(0, 1) `noise` of the same shape.

    gate: exactly one-hot of argmax(logits + noise) in the forward pass, with the gradient of
      the soft sample y = softmax((logits + noise) / τ) in the backward pass; soft: y.
    The hard decision does not depend on τ: it is a sample of softmax(logits) (Gumbel-max).
    """
    soft = jax.nn.softmax((logits.astype(jnp.float32) + noise) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft)), soft


def gumbel_softmax(rng: jax.Array, logits: jax.Array,
                   temperature: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """`straight_through` with noise drawn from `rng`."""
    noise = jax.random.gumbel(rng, logits.shape, dtype=jnp.float32)
    return straight_through(logits, noise, temperature)


def route(logits: jax.Array) -> jax.Array:
    """Inference decision: the branch index `[...]` with the highest logit."""
    return jnp.argmax(logits, axis=-1)
