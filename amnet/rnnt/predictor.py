"""The stateless prediction network: the last `context` label embeddings through one layer.

    out_u = relu([e_{u-c+1}; ...; e_u] W + b)        e_u = embed(y_u), e_0 = embed(start)

with zeros before the start. Unlike an LSTM over the whole label history it cannot model the
sentence: it sees c labels (2: a character bigram context), so the transducer has to take the
words from the encoder, not from a language model of the training templates (the stateless
transducers of icefall, after Ghodsi et al., ICASSP 2020). It has the same interface as
`amnet.rnnt.lstm.LSTMStack` (whole sequences, `step`, `initial_carry`); its carry is the window of
the c-1 previous embeddings `[B, c-1, E]`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class StatelessPredictor(nn.Module):
    input_dim: int  # E, the label embedding
    hidden: int  # H, the output
    context: int = 2  # c labels seen
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        if self.context < 1:
            raise ValueError(f"predictor context must be >= 1, got {self.context}")
        self.layer = nn.Dense(self.hidden, dtype=self.dtype)

    @property
    def output_dim(self) -> int:
        return self.hidden

    def initial_carry(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.context - 1, self.input_dim))

    def __call__(self, x: jax.Array, lengths: jax.Array,
                 carry: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """x `[B, L, E]` -> outputs `[B, L, H]` and the window after each length."""
        batch, steps, _ = x.shape
        carry = self.initial_carry(batch) if carry is None else carry
        padded = jnp.concatenate([carry, x], axis=1)  # [B, c - 1 + L, E]
        windows = jnp.concatenate([padded[:, k: k + steps] for k in range(self.context)],
                                  axis=-1)  # [B, L, c E], oldest label first
        outputs = jax.nn.relu(self.layer(windows))
        valid = jnp.arange(steps)[None, :] < lengths[:, None]
        ends = lengths[:, None] + jnp.arange(self.context - 1)[None, :]  # the last c-1 inputs
        final = jnp.take_along_axis(padded, ends[..., None], axis=1)
        return jnp.where(valid[..., None], outputs, 0.0), final

    def step(self, x_t: jax.Array, carry: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One label embedding x_t `[B, E]` -> output `[B, H]` and the new window."""
        window = jnp.concatenate([carry, x_t[:, None]], axis=1)  # [B, c, E]
        output = jax.nn.relu(self.layer(window.reshape(window.shape[0], -1)))
        return output, window[:, 1:]
