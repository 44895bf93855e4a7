"""Analytical FLOP counts per encoder frame and per training step (`train_step_flops`);
multiply and add count as one FLOP each.

Linear maps `x [in] -> [out]`:
  dense          2 * in * out
  sparse(s)      2 * nnz, nnz = round((1 - s) * in * out)
  sparse(s,AxB)  balanced blocks of A inputs x B outputs: each group of B output columns keeps
                 the same k = max(1, round((1 - s) * in / A)) blocks of A rows, so
                 nnz = k * A * out (a structure a CPU multiplies at dense speed, amnet.device)
  lowrank(r)     2 * r * (in + out)          (W ~= U V, U [in, r], V [r, out])
LSTM cell of H units (gates i, f, g, o) on top of its two matmuls:
  gate pre-activations: 4H (sum of the two products) + 4H (bias)
  state update c' = f c + i g, h' = o tanh(c'): 3H multiplies + H add
  non-linearities: 3H sigmoids + 2H tanh, counted as one FLOP each (XLA reports them apart, as
  "transcendentals").
"""

from __future__ import annotations

import dataclasses
import re

_SPEC = re.compile(r"^(dense|sparse\((0?\.\d+|0|1\.0*)(?:,(\d+)x(\d+))?\)|lowrank\((\d+)\))$")


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    """How a weight matrix is stored and multiplied: `dense`, `sparse` or `lowrank`."""

    kind: str = "dense"
    sparsity: float = 0.0  # sparse: share of zero weights
    rank: int = 0  # lowrank: r
    block: tuple[int, int] | None = None  # sparse: (inputs, outputs) of a block; None: any

    def __post_init__(self):
        if self.kind not in ("dense", "sparse", "lowrank"):
            raise ValueError(f"unknown linear kind {self.kind!r}")
        if self.kind == "sparse" and not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.kind == "lowrank" and self.rank <= 0:
            raise ValueError(f"lowrank needs a positive rank, got {self.rank}")
        if self.block is not None and (self.kind != "sparse" or len(self.block) != 2 or
                                       min(self.block) <= 0):
            raise ValueError(f"a block is two positive sizes of a sparse map, got {self.block}")

    @classmethod
    def parse(cls, text: str) -> LinearSpec:
        """`dense`, `sparse(0.9)` (share of zero weights), `sparse(0.9,8x64)` (in balanced
        blocks of 8 inputs x 64 outputs) or `lowrank(32)`."""
        match = _SPEC.match(text.replace(" ", ""))
        if match is None:
            raise ValueError(f"bad branch spec {text!r}: use dense, sparse(s) with 0 <= s < 1, "
                             "sparse(s,AxB) for blocks of A inputs x B outputs, or lowrank(r)")
        if match.group(2) is not None:
            block = (int(match.group(3)), int(match.group(4))) if match.group(3) else None
            return cls("sparse", sparsity=float(match.group(2)), block=block)
        if match.group(5) is not None:
            return cls("lowrank", rank=int(match.group(5)))
        return cls("dense")

    def __str__(self) -> str:
        if self.kind == "sparse" and self.block:
            return f"sparse({self.sparsity:g},{self.block[0]}x{self.block[1]})"
        if self.kind == "sparse":
            return f"sparse({self.sparsity:g})"
        if self.kind == "lowrank":
            return f"lowrank({self.rank})"
        return "dense"


def block_grid(in_dim: int, out_dim: int, spec: LinearSpec) -> tuple[int, int, int]:
    """(blocks per group, kept blocks per group k, groups) of a block-sparse `[in, out]` map."""
    rows, cols = spec.block
    if in_dim % rows or out_dim % cols:
        raise ValueError(f"a [{in_dim}, {out_dim}] kernel does not split into {spec}'s blocks "
                         f"of {rows} inputs x {cols} outputs")
    blocks = in_dim // rows
    return blocks, max(1, round((1.0 - spec.sparsity) * blocks)), out_dim // cols


def linear_flops(in_dim: int, out_dim: int, spec: LinearSpec = LinearSpec()) -> int:
    if spec.kind == "sparse" and spec.block:
        _, kept, _ = block_grid(in_dim, out_dim, spec)
        return 2 * kept * spec.block[0] * out_dim
    if spec.kind == "sparse":
        return 2 * round((1.0 - spec.sparsity) * in_dim * out_dim)
    if spec.kind == "lowrank":
        return 2 * spec.rank * (in_dim + out_dim)
    return 2 * in_dim * out_dim


def lstm_elementwise_flops(hidden: int) -> int:
    """Per frame, excluding the matmuls: 8H gate sums and biases, 4H state update, 5H
    non-linearities."""
    return 17 * hidden


def lstm_layer_flops(input_dim: int, hidden: int, projection: int | None = None,
                     spec: LinearSpec = LinearSpec()) -> int:
    """One LSTM(P) layer, one frame, all matmuls stored as `spec`."""
    output = projection or hidden
    flops = linear_flops(input_dim, 4 * hidden, spec) + linear_flops(output, 4 * hidden, spec)
    if projection:
        flops += linear_flops(hidden, projection, spec)
    return flops + lstm_elementwise_flops(hidden)


def encoder_frame_flops(input_dim: int, hidden: int, num_layers: int,
                        projection: int | None = None, spec: LinearSpec = LinearSpec()) -> int:
    """A stack of LSTM layers, one 30 ms frame."""
    dims = [input_dim] + [projection or hidden] * (num_layers - 1)
    return sum(lstm_layer_flops(d, hidden, projection, spec) for d in dims)


def decoder_frame_flops(encoder_output: int, joint: int, vocab: int, embed: int,
                        predictor_hidden: int, predictor_layers: int,
                        stateless_context: int = 0) -> int:
    """Per-frame work of greedy decoding, charged to every frame: the encoder's joint
    projection, one joint evaluation (add, tanh, output layer, argmax) and one prediction-network
    step with its projection (an upper bound: a step is taken only when a label is emitted,
    about one frame in two on spoken commands)."""
    joint_eval = linear_flops(encoder_output, joint) + joint + 2 * joint
    joint_eval += linear_flops(joint, vocab) + 2 * vocab
    if stateless_context:  # `amnet.rnnt.predictor`: one layer on the last c embeddings, relu
        predictor = linear_flops(stateless_context * embed, predictor_hidden) + 2 * predictor_hidden
    else:
        predictor = encoder_frame_flops(embed, predictor_hidden, predictor_layers)
    return joint_eval + predictor + linear_flops(predictor_hidden, joint)


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """Matmul FLOPs of one training step, by part (multiply and add count one each).

    forward / backward: per part, the products of the forward pass and those of the gradients
    the step needs (weights, and activations that lead to a weight: not the features).
    recomputed: products run beyond the model's (the fused loss's recomputed joint and its
      padding to whole chunks).
    frontend: the log-mel filterbank product (no gradient); JAX computes it inside the step.
    """

    forward: dict[str, int]
    backward: dict[str, int]
    recomputed: int = 0
    frontend: int = 0

    @property
    def model(self) -> int:
        """Model FLOPs: forward + backward of the network, no recomputation, no frontend (the
        figure utilization is reported against, whatever the implementation recomputes)."""
        return sum(self.forward.values()) + sum(self.backward.values())

    @property
    def executed(self) -> int:
        """What the JAX step runs: model FLOPs + recomputation + the frontend's product."""
        return self.model + self.recomputed + self.frontend


def _lstm_stack_step(batch_positions: int, input_dim: int, hidden: int, layers: int,
                     projection: int | None, input_grad: bool) -> tuple[int, int]:
    """(forward, backward) matmul FLOPs of an LSTM(P) stack over `batch_positions` positions.
    Every product's backward pass costs twice its forward (input and weight gradients), except
    the first layer's input gradient when `input_grad` is False."""
    output = projection or hidden
    forward = backward = 0
    for layer in range(layers):
        d = input_dim if layer == 0 else output
        products = [(d, 4 * hidden), (output, 4 * hidden)]
        if projection:
            products.append((hidden, projection))
        for k, (n_in, n_out) in enumerate(products):
            f = batch_positions * linear_flops(n_in, n_out)
            forward += f
            backward += f if (layer == 0 and k == 0 and not input_grad) else 2 * f
    return forward, backward


def train_step_flops(config, batch: int, frames: int, labels: int, *, ctc: bool = True,
                     frontend_frames: int = 0, fft_bins: int = 0, num_mels: int = 0
                     ) -> StepFlops:
    """`StepFlops` of one step of a one-encoder `TransducerConfig` on padded shapes: `batch`
    utterances of `frames` encoder frames `[B, T, D]` and `labels` tokens `[B, U]`.

    ctc: the CTC head's product (if `config.ctc_head`). The exact loss (`loss="fused"`)
    evaluates the joint on every lattice node `[B, T, U+1]` and recomputes it in the backward
    pass; the pruned loss evaluates it on `prune_range` tokens per frame `[B, T, R]`, plus the
    simple joint (two output layers and the `[B, T, V] x [B, U+1, V]` normalizer product).
    frontend_frames / fft_bins / num_mels: the 10 ms frames before stacking and the filterbank
    shape (0: no frontend in the step, as the PyTorch twin with precomputed features).
    """
    if len(config.encoder_branches) != 1 or config.encoder_branches[0] != "dense":
        raise ValueError("train_step_flops counts one dense encoder, got "
                         f"{config.encoder_branches}")
    b, t, u1, v = batch, frames, labels + 1, config.vocab_size
    j, enc_out = config.joint_dim, config.encoder_projection or config.encoder_hidden
    fwd, bwd = {}, {}
    fwd["encoder"], bwd["encoder"] = _lstm_stack_step(
        b * t, config.input_dim, config.encoder_hidden, config.encoder_layers,
        config.encoder_projection, input_grad=False)
    if config.predictor == "stateless":
        f = b * u1 * linear_flops(config.predictor_context * config.embed_dim,
                                  config.predictor_hidden)
        fwd["predictor"], bwd["predictor"] = f, 2 * f
    else:
        fwd["predictor"], bwd["predictor"] = _lstm_stack_step(
            b * u1, config.embed_dim, config.predictor_hidden, config.predictor_layers, None,
            input_grad=True)
    products = {"encoder_to_joint": b * t * linear_flops(enc_out, j),
                "predictor_to_joint": b * u1 * linear_flops(config.predictor_hidden, j)}
    if ctc and config.ctc_head:
        products["ctc_output"] = b * t * linear_flops(enc_out, v)
        # optax.ctc_loss picks each label's log-probability with a one-hot product
        # [B, T, V] x [B, U, V] -> [B, T, U]; its backward needs the log-probabilities' side only.
        fwd["ctc_labels"] = bwd["ctc_labels"] = b * t * labels * linear_flops(v, 1)
    recomputed = 0
    if config.loss == "pruned":
        window = min(config.prune_range, u1)
        products["joint"] = b * t * window * linear_flops(j, v)
        products["simple_joint"] = (b * t * linear_flops(j, v) + b * u1 * linear_flops(j, v)
                                    + 2 * b * t * u1 * v)
    else:
        products["joint"] = b * t * u1 * linear_flops(j, v)
        # The fused loss pads T to whole chunks of `loss_frames_per_chunk` and recomputes each
        # chunk's joint in the backward pass (jax.checkpoint): 4 passes over the padded frames.
        chunk = config.loss_frames_per_chunk
        padded = b * (-(-t // chunk) * chunk) * u1 * linear_flops(j, v)
        recomputed = 4 * padded - 3 * products["joint"]
    for name, f in products.items():
        fwd[name], bwd[name] = f, 2 * f
    frontend = b * frontend_frames * linear_flops(fft_bins, num_mels)
    return StepFlops(fwd, bwd, recomputed, frontend)
