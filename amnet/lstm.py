"""Unidirectional LSTM layers for streaming: whole sequences or one step at a time.

Gates (order i, f, g, o), with x_t `[B, D]` and carry (h, c):
  z = x_t W_x + h W_h + b;  c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
and, with a projection (LSTMP), h' <- h' W_p. The input product x W_x of a whole sequence is
hoisted out of the time loop (one large matmul); the recurrence runs in `lax.scan`. Frames
past an utterance's length leave the carry unchanged and output zeros, so the final carry is
the state after the last real frame (what a streaming session continues from).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = tuple[jax.Array, jax.Array]  # (h [B, P], c [B, H])


def lstm_cell(gates_x: jax.Array, carry: Carry, recurrent_kernel: jax.Array,
              projection: jax.Array | None) -> Carry:
    """One step from precomputed input gates `[B, 4H]`; returns the new (h, c)."""
    h, c = carry
    gates = gates_x + jnp.dot(h.astype(recurrent_kernel.dtype), recurrent_kernel,
                              preferred_element_type=jnp.float32)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if projection is not None:
        h = jnp.dot(h.astype(projection.dtype), projection, preferred_element_type=jnp.float32)
    return h, c


class LSTM(nn.Module):
    """One LSTM layer `[B, T, input_dim]` -> `[B, T, output_dim]`, optionally projected."""

    input_dim: int
    hidden: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32  # matmul dtype; params and state stay float32

    @property
    def output_dim(self) -> int:
        return self.projection or self.hidden

    def setup(self):
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.input_kernel = self.param("input_kernel", init, (self.input_dim, 4 * self.hidden))
        self.recurrent_kernel = self.param(
            "recurrent_kernel", nn.initializers.orthogonal(), (self.output_dim, 4 * self.hidden))
        # Forget-gate bias 1: remember by default at the start of training.
        self.bias = self.param("bias", lambda _, shape: jnp.zeros(shape).at[
            self.hidden: 2 * self.hidden].set(1.0), (4 * self.hidden,))
        self.projection_kernel = (self.param("projection_kernel", init,
                                             (self.hidden, self.projection))
                                  if self.projection else None)

    def initial_carry(self, batch: int) -> Carry:
        return (jnp.zeros((batch, self.output_dim)), jnp.zeros((batch, self.hidden)))

    def _input_gates(self, x: jax.Array) -> jax.Array:
        return jnp.dot(x.astype(self.dtype), self.input_kernel.astype(self.dtype),
                       preferred_element_type=jnp.float32) + self.bias

    def _weights(self):
        projection = (None if self.projection_kernel is None
                      else self.projection_kernel.astype(self.dtype))
        return self.recurrent_kernel.astype(self.dtype), projection

    def __call__(self, x: jax.Array, lengths: jax.Array,
                 carry: Carry | None = None) -> tuple[jax.Array, Carry]:
        """x `[B, T, D]`, lengths `[B]` -> outputs `[B, T, P]` and the carry after each length."""
        batch, frames, _ = x.shape
        carry = self.initial_carry(batch) if carry is None else carry
        gates_x = self._input_gates(x).swapaxes(0, 1)  # [T, B, 4H]
        valid = (jnp.arange(frames)[:, None] < lengths[None, :])[..., None]  # [T, B, 1]
        recurrent, projection = self._weights()

        def step(carry, inputs):
            gates_t, valid_t = inputs
            new = lstm_cell(gates_t, carry, recurrent, projection)
            carry = jax.tree.map(lambda n, o: jnp.where(valid_t, n, o), new, carry)
            return carry, jnp.where(valid_t, new[0], 0.0)

        carry, outputs = jax.lax.scan(step, carry, (gates_x, valid))
        return outputs.swapaxes(0, 1), carry

    def step(self, x_t: jax.Array, carry: Carry) -> tuple[jax.Array, Carry]:
        """One frame: x_t `[B, D]` -> output `[B, P]` and the new carry."""
        carry = lstm_cell(self._input_gates(x_t), carry, *self._weights())
        return carry[0], carry


class LSTMStack(nn.Module):
    """Layers of `LSTM`; carries are one per layer."""

    input_dim: int
    hidden: int
    num_layers: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        dims = [self.input_dim] + [self.projection or self.hidden] * (self.num_layers - 1)
        self.layers = [LSTM(d, self.hidden, self.projection, self.dtype) for d in dims]

    @property
    def output_dim(self) -> int:
        return self.projection or self.hidden

    def initial_carry(self, batch: int) -> list[Carry]:
        return [layer.initial_carry(batch) for layer in self.layers]

    def __call__(self, x: jax.Array, lengths: jax.Array,
                 carries: Sequence[Carry] | None = None) -> tuple[jax.Array, list[Carry]]:
        carries = carries or [None] * len(self.layers)
        out = []
        for layer, carry in zip(self.layers, carries, strict=True):
            x, carry = layer(x, lengths, carry)
            out.append(carry)
        return x, out

    def step(self, x_t: jax.Array, carries: Sequence[Carry]) -> tuple[jax.Array, list[Carry]]:
        out = []
        for layer, carry in zip(self.layers, carries, strict=True):
            x_t, carry = layer.step(x_t, carry)
            out.append(carry)
        return x_t, out
