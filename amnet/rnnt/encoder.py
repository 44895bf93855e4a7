"""The RNN-T's encoder: one stack of LSTM layers, stored as its `LinearSpec` (dense, sparse(s),
lowrank(r)), run layer by layer with the input products hoisted out of the time loop.

The transducer takes any encoder with this interface (`amnet.rnnt.transducer`); AmNet's
branched encoder (`amnet.amortized.encoder`) is the other one:
  __call__(x [B, T, D], lengths [B], state=None, *, noise=None, temperature=1.0)
      -> outputs [B, T, P], the state after each length, a routing trace (None here)
  initial_state(batch) -> state;  step(x_t [B, D], state) -> output [B, P], state, branch [B]
Here the state is the stack's carries, one (h [B, P], c [B, H]) per layer.

The stack is named `branch_0`: a single-encoder run's parameters (`encoder/branch_0/...`) are
then, as they are, branch 0 of an AmNet warm-started from it (`amnet.amortized.warm_start`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from amnet.rnnt.flops import LinearSpec
from amnet.rnnt.lstm import Carry, LSTMStack


class Encoder(nn.Module):
    input_dim: int
    hidden: int
    num_layers: int
    projection: int | None = None
    dtype: jnp.dtype = jnp.float32
    spec: LinearSpec = LinearSpec()
    hand_written_backward: bool = True  # `amnet.rnnt.lstm.LSTM.hand_written_backward`

    def setup(self):
        self.branch = [LSTMStack(self.input_dim, self.hidden, self.num_layers, self.projection,
                                 self.dtype, self.spec, self.hand_written_backward)]

    @property
    def output_dim(self) -> int:
        return self.projection or self.hidden

    def initial_state(self, batch: int) -> list[Carry]:
        return self.branch[0].initial_carry(batch)

    def __call__(self, x: jax.Array, lengths: jax.Array, state: list[Carry] | None = None, *,
                 noise: jax.Array | None = None, temperature: jax.Array | float = 1.0,
                 ) -> tuple[jax.Array, list[Carry], None]:
        """x `[B, T, D]`, lengths `[B]` -> outputs `[B, T, P]`, the carries after each length,
        None (no routing; `noise` and `temperature` are for a routed encoder)."""
        del temperature
        if noise is not None:
            raise ValueError("routing noise given to a single-stack encoder")
        outputs, carries = self.branch[0](x, lengths, state)
        return outputs, carries, None

    def step(self, x_t: jax.Array, state: list[Carry]) -> tuple[jax.Array, list[Carry], jax.Array]:
        """One frame x_t `[B, D]` -> output `[B, P]`, the new carries, branch 0 `[B]`."""
        out, carries = self.branch[0].step(x_t, state)
        return out, carries, jnp.zeros((x_t.shape[0],), jnp.int32)
