"""Unidirectional LSTM layers for streaming: whole sequences or one step at a time.

Gates (order i, f, g, o), with x_t `[B, D]` and carry (h, c):
  z = x_t W_x + h W_h + b;  c' = sigmoid(f) * c + sigmoid(i) * tanh(g);  h' = sigmoid(o) * tanh(c')
and, with a projection (LSTMP), h' <- h' W_p. The input product x W_x of a whole sequence is
hoisted out of the time loop (one large matmul); the recurrence runs in `lax.scan`, with the
hand-written backward pass of `amnet.rnnt.lstm_recurrence` for float32 dense/sparse kernels. Frames
past an utterance's length leave the carry unchanged and output zeros, so the final carry is
the state after the last real frame (what a streaming session continues from).

Every weight matrix is stored as its `LinearSpec` says (`amnet.rnnt.flops`): `dense` and `sparse` as
one `[in, out]` kernel (a sparse kernel holds exact zeros, kept by `amnet.amortized.pruning`),
`lowrank(r)`
as two factors `kernel_u` `[in, r]` and `kernel_v` `[r, out]`, multiplied in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from amnet.rnnt import flops, lstm_recurrence
from amnet.rnnt.flops import LinearSpec

Carry = tuple[jax.Array, jax.Array]  # (h [B, P], c [B, H])
Weight = jax.Array | tuple[jax.Array, jax.Array]  # [in, out], or low-rank factors (u, v)


def matmul(x: jax.Array, weight: Weight) -> jax.Array:
    """x `[..., in]` @ weight -> `[..., out]` (float32 accumulation, in the weight's dtype)."""
    if isinstance(weight, tuple):
        u, v = weight
        return jnp.dot(jnp.dot(x.astype(u.dtype), u, preferred_element_type=jnp.float32
                               ).astype(v.dtype), v, preferred_element_type=jnp.float32)
    return jnp.dot(x.astype(weight.dtype), weight, preferred_element_type=jnp.float32)


def lstm_cell(gates_x: jax.Array, carry: Carry, recurrent_kernel: Weight,
              projection: Weight | None) -> Carry:
    """One step from precomputed input gates `[B, 4H]`; returns the new (h, c)."""
    h, c = carry
    gates = gates_x + matmul(h, recurrent_kernel)
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    if projection is not None:
        h = matmul(h, projection)
    return h, c


def weight_param(module: nn.Module, name: str, shape: tuple[int, int], spec: LinearSpec,
                 init: nn.initializers.Initializer) -> Weight:
    """Declares `name` as `spec` says: one kernel, or `{name}_u`, `{name}_v` for low rank.

    Low-rank factors are both fan-in scaled, so u @ v starts with the variance of a fan-in
    initialized dense kernel.
    """
    if spec.kind == "sparse" and spec.block:
        flops.block_grid(*shape, spec)  # the kernel splits into the spec's blocks (or raises)
    if spec.kind != "lowrank":
        return module.param(name, init, shape)
    fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
    return (module.param(f"{name}_u", fan_in, (shape[0], spec.rank)),
            module.param(f"{name}_v", fan_in, (spec.rank, shape[1])))


def cast(weight: Weight, dtype) -> Weight:
    return jax.tree.map(lambda w: w.astype(dtype), weight)


class LayerWeights(NamedTuple):
    input_kernel: Weight
    bias: jax.Array
    recurrent_kernel: Weight
    projection: Weight | None


def layer_step(weights: LayerWeights, x_t: jax.Array, carry: Carry) -> Carry:
    """One frame of one layer as a pure function: x_t `[B, D]` -> new (h, c)."""
    gates_x = matmul(x_t, weights.input_kernel) + weights.bias
    return lstm_cell(gates_x, carry, weights.recurrent_kernel, weights.projection)


def _float32_matrices(recurrent: Weight, projection: Weight | None) -> bool:
    """Whether `amnet.rnnt.lstm_recurrence` applies: float32 kernels stored as one matrix."""
    return all(isinstance(w, jax.Array) and w.dtype == jnp.float32
               for w in (recurrent, projection) if w is not None)


class LSTM(nn.Module):
    """One LSTM layer `[B, T, input_dim]` -> `[B, T, output_dim]`, optionally projected."""

    input_dim: int
    hidden: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32  # matmul dtype; params and state stay float32
    spec: LinearSpec = LinearSpec()
    # The recurrence's backward pass: `amnet.rnnt.lstm_recurrence` (float32 matrices), or
    # False: autodiff of the plain scan (`model.lstm_backward`; benchmarks measure both).
    hand_written_backward: bool = True

    @property
    def output_dim(self) -> int:
        return self.projection or self.hidden

    def setup(self):
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.input_kernel = weight_param(self, "input_kernel", (self.input_dim, 4 * self.hidden),
                                         self.spec, init)
        self.recurrent_kernel = weight_param(self, "recurrent_kernel",
                                             (self.output_dim, 4 * self.hidden), self.spec,
                                             nn.initializers.orthogonal())
        # Forget-gate bias 1: remember by default at the start of training.
        self.bias = self.param("bias", lambda _, shape: jnp.zeros(shape).at[
            self.hidden: 2 * self.hidden].set(1.0), (4 * self.hidden,))
        self.projection_kernel = (weight_param(self, "projection_kernel",
                                               (self.hidden, self.projection), self.spec, init)
                                  if self.projection else None)

    def initial_carry(self, batch: int) -> Carry:
        return (jnp.zeros((batch, self.output_dim)), jnp.zeros((batch, self.hidden)))

    def weights(self) -> LayerWeights:
        """The layer's arrays, for pure functions (`layer_step`) inside JAX transforms."""
        return LayerWeights(cast(self.input_kernel, self.dtype), self.bias,
                            *self.recurrent_weights())

    def input_gates(self, x: jax.Array) -> jax.Array:
        """x `[..., D]` -> input contribution to the gates `[..., 4H]` (with the bias)."""
        return matmul(x, cast(self.input_kernel, self.dtype)) + self.bias

    def recurrent_weights(self) -> tuple[Weight, Weight | None]:
        """(recurrent kernel, projection or None) in the matmul dtype, for `lstm_cell`."""
        projection = (None if self.projection_kernel is None
                      else cast(self.projection_kernel, self.dtype))
        return cast(self.recurrent_kernel, self.dtype), projection

    def __call__(self, x: jax.Array, lengths: jax.Array,
                 carry: Carry | None = None) -> tuple[jax.Array, Carry]:
        """x `[B, T, D]`, lengths `[B]` -> outputs `[B, T, P]` and the carry after each length."""
        batch, frames, _ = x.shape
        carry = self.initial_carry(batch) if carry is None else carry
        gates_x = self.input_gates(x).swapaxes(0, 1)  # [T, B, 4H]
        valid = (jnp.arange(frames)[:, None] < lengths[None, :])[..., None]  # [T, B, 1]
        recurrent, projection = self.recurrent_weights()
        if self.hand_written_backward and _float32_matrices(recurrent, projection):
            outputs, carry = lstm_recurrence.recurrence(gates_x, valid.astype(gates_x.dtype),
                                                        carry, recurrent, projection)
            return outputs.swapaxes(0, 1), carry

        def step(carry, inputs):
            gates_t, valid_t = inputs
            new = lstm_cell(gates_t, carry, recurrent, projection)
            carry = jax.tree.map(lambda n, o: jnp.where(valid_t, n, o), new, carry)
            return carry, jnp.where(valid_t, new[0], 0.0)

        carry, outputs = jax.lax.scan(step, carry, (gates_x, valid))
        return outputs.swapaxes(0, 1), carry

    def step(self, x_t: jax.Array, carry: Carry) -> tuple[jax.Array, Carry]:
        """One frame: x_t `[B, D]` -> output `[B, P]` and the new carry."""
        carry = lstm_cell(self.input_gates(x_t), carry, *self.recurrent_weights())
        return carry[0], carry


class LSTMStack(nn.Module):
    """Layers of `LSTM`; carries are one per layer."""

    input_dim: int
    hidden: int
    num_layers: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32
    spec: LinearSpec = LinearSpec()
    hand_written_backward: bool = True  # `LSTM.hand_written_backward`

    def setup(self):
        dims = [self.input_dim] + [self.projection or self.hidden] * (self.num_layers - 1)
        self.layers = [LSTM(d, self.hidden, self.projection, self.dtype, self.spec,
                            self.hand_written_backward) for d in dims]

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
