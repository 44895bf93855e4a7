"""The streaming RNN-T model: LSTM encoder, LSTM prediction network, additive joint.

    model = Transducer(TransducerConfig(...))
    params = model.init(rng, features, feature_lengths, targets, target_lengths)["params"]
    costs = model.apply({"params": params}, features, feature_lengths, targets, target_lengths)

Shapes: features `[B, T, D]` (stacked log-mels, 30 ms frames), targets `[B, U]`, joint width J,
vocabulary V (id 0 = blank, also the prediction network's start symbol).
Joint: `logits = tanh(enc_proj + pred_proj) @ W_out + b_out`, enc_proj = encoder output @ W_e + b,
pred_proj = prediction output @ W_p.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from amnet import rnnt
from amnet.lstm import LSTMStack


@dataclasses.dataclass(frozen=True)
class TransducerConfig:
    input_dim: int = 240  # 3 stacked 80-dim log-mel frames
    vocab_size: int = 29  # blank + characters
    encoder_layers: int = 3
    encoder_hidden: int = 320
    encoder_projection: int | None = None
    embed_dim: int = 128
    predictor_layers: int = 1
    predictor_hidden: int = 320
    joint_dim: int = 320
    blank: int = 0
    dtype: str = "float32"  # matmul dtype ("bfloat16" for mixed precision; params stay fp32)
    loss_frames_per_chunk: int = 1  # frames per rematerialized step of the fused loss


class Transducer(nn.Module):
    config: TransducerConfig

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        self.encoder = LSTMStack(c.input_dim, c.encoder_hidden, c.encoder_layers,
                                 c.encoder_projection, dtype)
        self.embed = nn.Embed(c.vocab_size, c.embed_dim)
        self.predictor = LSTMStack(c.embed_dim, c.predictor_hidden, c.predictor_layers,
                                   dtype=dtype)
        self.encoder_to_joint = nn.Dense(c.joint_dim, dtype=dtype)
        self.predictor_to_joint = nn.Dense(c.joint_dim, use_bias=False, dtype=dtype)
        self.output_kernel = self.param("output_kernel", nn.initializers.lecun_normal(),
                                        (c.joint_dim, c.vocab_size))
        self.output_bias = self.param("output_bias", nn.initializers.zeros, (c.vocab_size,))

    def __call__(self, features: jax.Array, feature_lengths: jax.Array, targets: jax.Array,
                 target_lengths: jax.Array, *, fused: bool = True) -> jax.Array:
        """Per-utterance RNN-T costs `[B]`; `fused=False` materializes the 4-D logits."""
        enc_proj, _ = self.encode(features, feature_lengths)
        pred_proj = self.predict(targets, target_lengths)
        if fused:
            return rnnt.rnnt_loss_fused(
                enc_proj, pred_proj, self._output_kernel(), self.output_bias, feature_lengths,
                targets, target_lengths, blank=self.config.blank,
                frames_per_chunk=self.config.loss_frames_per_chunk)
        return rnnt.rnnt_loss(self.joint(enc_proj[:, :, None], pred_proj[:, None]),
                              feature_lengths, targets, target_lengths, blank=self.config.blank)

    def _output_kernel(self) -> jax.Array:
        return self.output_kernel.astype(self.config.dtype)

    def encode(self, features: jax.Array, lengths: jax.Array, carries=None):
        """features `[B, T, D]` -> enc_proj `[B, T, J]` and the encoder carries."""
        outputs, carries = self.encoder(features, lengths, carries)
        return self.encoder_to_joint(outputs), carries

    def predict(self, targets: jax.Array, target_lengths: jax.Array) -> jax.Array:
        """targets `[B, U]` -> pred_proj `[B, U+1, J]` (position u has seen y_1..y_u)."""
        start = jnp.full((targets.shape[0], 1), self.config.blank, targets.dtype)
        embedded = self.embed(jnp.concatenate([start, targets], axis=1))
        outputs, _ = self.predictor(embedded, target_lengths + 1)
        return self.predictor_to_joint(outputs)

    def joint(self, enc_proj: jax.Array, pred_proj: jax.Array) -> jax.Array:
        """Logits `[..., V]` (float32) from broadcastable enc_proj and pred_proj `[..., J]`."""
        hidden = jnp.tanh(enc_proj + pred_proj)
        return jnp.dot(hidden, self._output_kernel(),
                       preferred_element_type=jnp.float32) + self.output_bias

    # Streaming: one encoder frame / one predictor token at a time.
    def initial_state(self, batch: int):
        """(encoder carries, predictor carries) for a fresh stream."""
        return self.encoder.initial_carry(batch), self.predictor.initial_carry(batch)

    def encode_step(self, frame: jax.Array, carries):
        """frame `[B, D]` -> enc_proj `[B, J]` and the new encoder carries."""
        output, carries = self.encoder.step(frame, carries)
        return self.encoder_to_joint(output), carries

    def predict_step(self, tokens: jax.Array, carries):
        """tokens `[B]` (blank = start) -> pred_proj `[B, J]` and the new predictor carries."""
        output, carries = self.predictor.step(self.embed(tokens), carries)
        return self.predictor_to_joint(output), carries
