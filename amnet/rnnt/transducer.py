"""The streaming RNN-T model: LSTM encoder, prediction network (LSTM, or stateless:
`amnet.rnnt.predictor`), additive joint.

    model = amnet.build.transducer(TransducerConfig(...))  # = Transducer(config, encoder)
    params = model.init(rng, features, feature_lengths, targets, target_lengths)["params"]
    costs = model.apply({"params": params}, features, feature_lengths, targets, target_lengths)

The encoder is passed in (`Transducer(config, encoder)`; `amnet.build.transducer` makes it from
the config): any module with the interface of `amnet.amortized.encoder.Encoder`, i.e.
`__call__(x [B, T, D], lengths [B], state=None, *, noise=None, temperature=1.0)` ->
(outputs `[B, T, P]`, state, routing trace or None), `initial_state(batch)` and
`step(x_t [B, D], state)` -> (output `[B, P]`, state, branch `[B]`). The dense baseline's is a
single LSTM stack (no trace); AmNet's has K branches and an arbitrator, and `forward` also
returns the routing trace that AmNet's loss needs. Its parameters live under `encoder/`.

Shapes: features `[B, T, D]` (stacked log-mels, 30 ms frames), targets `[B, U]`, joint width J,
vocabulary V (id 0 = blank, also the prediction network's start symbol).
Joint: `logits = tanh(enc_proj + pred_proj) @ W_out + b_out`, enc_proj = encoder output @ W_e + b,
pred_proj = prediction output @ W_p. With `ctc_head`, a linear layer on the encoder output gives
CTC logits `[B, T, V]` for the auxiliary CTC loss (`amnet.rnnt.ctc`; training and diagnostics only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from amnet.data.text import CHAR_VOCAB_SIZE
from amnet.rnnt import ctc, flops
from amnet.rnnt import loss as rnnt
from amnet.rnnt import pruned_loss as rnnt_pruned
from amnet.rnnt.lstm import LSTMStack
from amnet.rnnt.predictor import StatelessPredictor


@dataclasses.dataclass(frozen=True)
class TransducerConfig:
    input_dim: int = 240  # 3 stacked 80-dim log-mel frames
    vocab_size: int = CHAR_VOCAB_SIZE  # blank + characters (`amnet.data.text`)
    encoder_layers: int = 3
    encoder_hidden: int = 320
    encoder_projection: int | None = None
    embed_dim: int = 128
    predictor: str = "lstm"  # or "stateless": the last `predictor_context` labels only
    predictor_context: int = 2
    predictor_layers: int = 1  # LSTM layers
    predictor_hidden: int = 320
    joint_dim: int = 320
    blank: int = 0
    ctc_head: bool = False  # a CTC output layer on the encoder (the auxiliary loss)
    # Initial bias of the blank logit (joint and CTC head): > 0 starts both "waiting", so that
    # no frame is pushed to emit before the model can hear anything (docs/rnnt.md, the recipe).
    blank_bias_init: float = 0.0
    dtype: str = "float32"  # matmul dtype ("bfloat16" for mixed precision; params stay fp32)
    loss_frames_per_chunk: int = 1  # frames per rematerialized step of the fused loss
    # The LSTMs' backward pass: "hand_written" (`amnet.rnnt.lstm_recurrence`) or "autodiff"
    # (XLA's autodiff of the plain scan; `benchmarks.run` measures both side by side).
    lstm_backward: str = "hand_written"
    # "fused": the exact loss (`amnet.rnnt.rnnt_loss_fused`); "pruned": the pruned loss with a
    # simple joint (`amnet.rnnt.pruned_loss`), the full joint on `prune_range` tokens per frame.
    loss: str = "fused"
    prune_range: int = 5
    # Encoder branches: specs `dense`, `sparse(s)`, `lowrank(r)`; two or more make an AmNet.
    encoder_branches: tuple[str, ...] = ("dense",)
    arbitrator_hidden: int = 16
    # The processor the arbitrator is trained for (its backlog input): `amnet.amortized.latency`.
    frame_period_s: float = 0.03
    processor_flops: float = 1e8

    def __post_init__(self):
        object.__setattr__(self, "encoder_branches", tuple(self.encoder_branches))
        for spec in self.encoder_branches:
            flops.LinearSpec.parse(spec)  # a clear error for a bad spec, at construction
        if self.predictor not in ("lstm", "stateless"):
            raise ValueError(f"predictor must be 'lstm' or 'stateless', got {self.predictor!r}")
        if self.lstm_backward not in ("hand_written", "autodiff"):
            raise ValueError(f"lstm_backward must be 'hand_written' or 'autodiff', got "
                             f"{self.lstm_backward!r}")
        if self.loss not in ("fused", "pruned"):
            raise ValueError(f"loss must be 'fused' or 'pruned', got {self.loss!r}")


class Losses(NamedTuple):
    """Per-utterance training costs of `Transducer.forward`."""

    rnnt: jax.Array  # [B] -log P(y | x) under the transducer (pruned: 0 where infeasible)
    ctc: jax.Array | None  # [B] CTC cost of the encoder head (0 where infeasible), or None
    ctc_feasible: jax.Array | None  # [B] bool: the targets fit the frames under CTC
    trace: Any  # the encoder's routing record (AmNet's `RoutingTrace`; None with one branch)
    simple: jax.Array | None = None  # [B] the simple joint's cost (pruned loss), or None
    pruned_feasible: jax.Array | None = None  # [B] bool: the pruning windows fit (pruned loss)


class Transducer(nn.Module):
    config: TransducerConfig
    encoder: nn.Module  # features -> encoder outputs (module docstring)

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        self.embed = nn.Embed(c.vocab_size, c.embed_dim)
        self.predictor = (
            StatelessPredictor(c.embed_dim, c.predictor_hidden, c.predictor_context, dtype)
            if c.predictor == "stateless" else
            LSTMStack(c.embed_dim, c.predictor_hidden, c.predictor_layers, dtype=dtype,
                      hand_written_backward=c.lstm_backward == "hand_written"))
        self.encoder_to_joint = nn.Dense(c.joint_dim, dtype=dtype)
        self.predictor_to_joint = nn.Dense(c.joint_dim, use_bias=False, dtype=dtype)
        self.output_kernel = self.param("output_kernel", nn.initializers.lecun_normal(),
                                        (c.joint_dim, c.vocab_size))
        self.output_bias = self.param("output_bias", self._blank_bias, (c.vocab_size,))
        if c.ctc_head:
            self.ctc_output = nn.Dense(c.vocab_size, dtype=dtype, bias_init=self._blank_bias)
        if c.loss == "pruned":  # the simple joint: am[t] + lm[u], from the joint's inputs
            # With the blank bias too: a simple joint that learns the degenerate alignment
            # would place every window at the first frames (docs/rnnt.md).
            self.simple_am = nn.Dense(c.vocab_size, dtype=dtype, bias_init=self._blank_bias)
            self.simple_lm = nn.Dense(c.vocab_size, use_bias=False, dtype=dtype)

    def _blank_bias(self, key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype).at[self.config.blank].set(self.config.blank_bias_init)

    def __call__(self, features: jax.Array, feature_lengths: jax.Array, targets: jax.Array,
                 target_lengths: jax.Array, *, fused: bool = True) -> jax.Array:
        """Per-utterance RNN-T costs `[B]`; `fused=False` materializes the 4-D logits (the
        exact loss, also for a model trained with the pruned one)."""
        return self.forward(features, feature_lengths, targets, target_lengths,
                            fused=fused).rnnt

    def forward(self, features: jax.Array, feature_lengths: jax.Array, targets: jax.Array,
                target_lengths: jax.Array, *, routing_noise: jax.Array | None = None,
                temperature: jax.Array | float = 1.0, fused: bool = True,
                encoder_probe: str | None = None, exact: bool = False) -> Losses:
        """RNN-T costs `[B]`, CTC costs (with `ctc_head`) and the routing trace.

        routing_noise: Gumbel noise `[B, T, K]` for training-time routing at `temperature`;
          None routes by argmax.
        exact: the exact (fused) loss also for a model trained with the pruned one
          (validation probes).
        encoder_probe: how much the transducer relies on the audio (docs/rnnt.md): "mean"
          replaces every frame's encoder output by the utterance's mean over its valid frames
          (no timing left); "swap" gives each utterance the encoder output of the next one in
          the batch (timing left, content wrong; zeros past that one's length).
        """
        outputs, _, trace = self.encoder(features, feature_lengths, noise=routing_noise,
                                         temperature=temperature)
        valid = (jnp.arange(outputs.shape[1])[None, :] < feature_lengths[:, None])[..., None]
        if encoder_probe == "mean":
            mean = jnp.sum(outputs * valid, axis=1, keepdims=True) / jnp.maximum(
                feature_lengths, 1)[:, None, None]
            outputs = jnp.where(valid, mean, 0.0)
        elif encoder_probe == "swap":
            outputs = jnp.where(valid, jnp.roll(outputs, -1, axis=0), 0.0)
        elif encoder_probe is not None:
            raise ValueError(f"encoder_probe must be 'mean', 'swap' or None, got "
                             f"{encoder_probe!r}")
        ctc_costs = feasible = None
        if self.config.ctc_head:
            ctc_costs, feasible = ctc.ctc_loss(self.ctc_output(outputs), feature_lengths,
                                               targets, target_lengths, blank=self.config.blank)
        enc_proj = self.encoder_to_joint(outputs)
        pred_proj = self.predict(targets, target_lengths)
        if fused and self.config.loss == "pruned" and not exact:
            pruned = rnnt_pruned.rnnt_loss_pruned(
                enc_proj, pred_proj, self._output_kernel(), self.output_bias,
                self.simple_am(enc_proj), self.simple_lm(pred_proj), feature_lengths, targets,
                target_lengths, s_range=self.config.prune_range, blank=self.config.blank)
            return Losses(pruned.pruned, ctc_costs, feasible, trace, pruned.simple,
                          pruned.feasible)
        if fused:
            costs = rnnt.rnnt_loss_fused(
                enc_proj, pred_proj, self._output_kernel(), self.output_bias, feature_lengths,
                targets, target_lengths, blank=self.config.blank,
                frames_per_chunk=self.config.loss_frames_per_chunk)
        else:
            costs = rnnt.rnnt_loss(self.joint(enc_proj[:, :, None], pred_proj[:, None]),
                                   feature_lengths, targets, target_lengths,
                                   blank=self.config.blank)
        return Losses(costs, ctc_costs, feasible, trace)

    def _output_kernel(self) -> jax.Array:
        return self.output_kernel.astype(self.config.dtype)

    def encode(self, features: jax.Array, lengths: jax.Array,
               state: Any = None) -> tuple[jax.Array, Any]:
        """features `[B, T, D]` -> enc_proj `[B, T, J]` and the encoder state (argmax routing)."""
        outputs, state, _ = self.encoder(features, lengths, state)
        return self.encoder_to_joint(outputs), state

    def ctc_logits(self, features: jax.Array, lengths: jax.Array) -> jax.Array:
        """features `[B, T, D]` -> CTC logits `[B, T, V]` of the encoder head (argmax routing)."""
        outputs, _, _ = self.encoder(features, lengths)
        return self.ctc_output(outputs)

    def route(self, features: jax.Array, lengths: jax.Array) -> Any:
        """The inference-time routing trace of whole utterances (None with one branch)."""
        return self.encoder(features, lengths)[2]

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
        """(encoder state, predictor carries) for a fresh stream."""
        return self.encoder.initial_state(batch), self.predictor.initial_carry(batch)

    def encode_step(self, frame: jax.Array, state: Any):
        """frame `[B, D]` -> enc_proj `[B, J]`, the new encoder state and the branch `[B]`."""
        output, state, branch = self.encoder.step(frame, state)
        return self.encoder_to_joint(output), state, branch

    def predict_step(self, tokens: jax.Array, carries):
        """tokens `[B]` (blank = start) -> pred_proj `[B, J]` and the new predictor carries."""
        output, carries = self.predictor.step(self.embed(tokens), carries)
        return self.predictor_to_joint(output), carries
