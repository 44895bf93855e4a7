"""The arbitrator: a tiny per-frame network that scores the encoder branches.

Inputs: the frame's stacked features x_t `[B, D]` and the backlog b_t seen when the frame
arrives, as the feature β_t = log1p(b_t / Δ). Logits over K branches:
  h_t = relu([x_t, β_t] W_1 + b_1)            W_1 `[D + 1, H]`
  z_t = [h_t, β_t] W_2 + b_2                  W_2 `[H + 1, K]`
The backlog reaches the logits both through h_t and directly, so "route to the cheap branch
when behind" is a single weight away. FLOPs: `amnet.amortized.costs.arbitrator_flops`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class ArbitratorWeights(NamedTuple):
    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array


def arbitrator_logits(weights: ArbitratorWeights, features: jax.Array,
                      backlog_feature: jax.Array) -> jax.Array:
    """features `[B, D]`, backlog_feature `[B]` -> logits `[B, K]` (float32)."""
    backlog = backlog_feature[:, None].astype(jnp.float32)
    hidden = jax.nn.relu(jnp.concatenate([features.astype(jnp.float32), backlog], axis=-1)
                         @ weights.w1 + weights.b1)
    return jnp.concatenate([hidden, backlog], axis=-1) @ weights.w2 + weights.b2


class Arbitrator(nn.Module):
    input_dim: int
    hidden: int
    branches: int

    def setup(self):
        init = nn.initializers.lecun_normal()
        self.w1 = self.param("w1", init, (self.input_dim + 1, self.hidden))
        self.b1 = self.param("b1", nn.initializers.zeros, (self.hidden,))
        self.w2 = self.param("w2", init, (self.hidden + 1, self.branches))
        self.b2 = self.param("b2", nn.initializers.zeros, (self.branches,))

    def weights(self) -> ArbitratorWeights:
        return ArbitratorWeights(self.w1, self.b1, self.w2, self.b2)

    def __call__(self, features: jax.Array, backlog_feature: jax.Array) -> jax.Array:
        return arbitrator_logits(self.weights(), features, backlog_feature)
