"""RNN-T loss: the exact reference (`rnnt_loss`) and a fused, memory-efficient training loss.

Notation: B utterances, T encoder frames, U target tokens, V vocabulary, H joint width.
The lattice holds, for each frame t and emitted-token count u,
  blank(t, u) = log P(blank | t, u)        emit(t, u) = log P(y_{u+1} | t, u)
and the forward variable alpha(t, u) (log-probability of reaching node (t, u)):
  alpha(0, 0) = 0
  alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + emit(t, u-1))
  cost = -(alpha(T-1, U) + blank(T-1, U))
The recursion runs along anti-diagonals n = t + u, each one a vector op over u. Impossible
nodes hold NEG (a large finite negative number rather than -inf) so that logaddexp and its
gradient stay finite everywhere; exp(NEG - x) is exactly 0 in float32. All lattice arithmetic
is float32 whatever the input dtype. See docs/rnnt.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG = -1e30


def lattice_nll(blank: jax.Array, emit: jax.Array, logit_lengths: jax.Array,
                target_lengths: jax.Array) -> jax.Array:
    """Negative log-likelihood from the lattice of log-probabilities.

    Args:
      blank: `[B, T, U+1]` log P(blank | t, u).
      emit: `[B, T, U+1]` log P(y_{u+1} | t, u); column U is ignored.
      logit_lengths: `[B]` valid frames T_b >= 1.
      target_lengths: `[B]` valid targets U_b.
    Returns:
      `[B]` costs -log P(y | x), float32.
    """
    blank = blank.astype(jnp.float32)
    emit = emit.astype(jnp.float32)
    batch, frames, width = blank.shape
    u = jnp.arange(width)

    def diagonal(prev, n):
        t = n - u  # frame of each node (t, u) on diagonal n
        from_below = prev + blank[:, jnp.clip(t - 1, 0, frames - 1), u]
        from_below = jnp.where((t >= 1) & (t <= frames), from_below, NEG)
        prev_left = jnp.concatenate([jnp.full((batch, 1), NEG), prev[:, :-1]], axis=1)
        from_left = prev_left + emit[:, jnp.clip(t, 0, frames - 1), jnp.maximum(u - 1, 0)]
        from_left = jnp.where((u >= 1) & (t >= 0) & (t < frames), from_left, NEG)
        alpha = jnp.where((t >= 0) & (t < frames), jnp.logaddexp(from_below, from_left), NEG)
        return alpha, alpha

    alpha0 = jnp.where(u == 0, 0.0, NEG)[None].repeat(batch, axis=0)
    _, alphas = jax.lax.scan(diagonal, alpha0, jnp.arange(1, frames + width - 1))
    alphas = jnp.concatenate([alpha0[None], alphas], axis=0)  # [N, B, U+1]
    last_t = logit_lengths - 1
    index = jnp.arange(batch)
    final_alpha = alphas[last_t + target_lengths, index, target_lengths]
    return -(final_alpha + blank[index, last_t, target_lengths])


def pad_targets(targets: jax.Array, width: int, blank: int) -> jax.Array:
    """`[B, U]` -> `[B, U+1]`, the extra column a dummy (its emit value is never read)."""
    return jnp.pad(targets, ((0, 0), (0, width - targets.shape[1])), constant_values=blank)


def lattice_from_logits(logits: jax.Array, targets: jax.Array, *,
                        blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """`[B, T, U+1, V]` logits -> blank and emit lattices `[B, T, U+1]` (float32)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    padded = pad_targets(targets, logits.shape[2], blank)
    emit = jnp.take_along_axis(log_probs, padded[:, None, :, None], axis=-1)[..., 0]
    return log_probs[..., blank], emit


def rnnt_loss(logits: jax.Array, logit_lengths: jax.Array, targets: jax.Array,
              target_lengths: jax.Array, *, blank: int = 0) -> jax.Array:
    """RNN-T loss with torchaudio semantics (`reduction='none'`, fused log-softmax).

    Args:
      logits: `[B, T, U+1, V]` unnormalized joint outputs (any float dtype).
      logit_lengths: `[B]` int, valid frames (>= 1).
      targets: `[B, U]` int token ids (no blanks), padded beyond `target_lengths`.
      target_lengths: `[B]` int.
      blank: blank id.
    Returns:
      `[B]` float32 costs -log P(targets | logits); `jax.grad` of their sum is the exact
      RNN-T gradient.
    """
    blank_lp, emit_lp = lattice_from_logits(logits, targets, blank=blank)
    return lattice_nll(blank_lp, emit_lp, logit_lengths, target_lengths)


def joint_lattice(enc_proj: jax.Array, pred_proj: jax.Array, output_kernel: jax.Array,
                  output_bias: jax.Array, targets: jax.Array, *, blank: int = 0,
                  frames_per_chunk: int = 1) -> tuple[jax.Array, jax.Array]:
    """Blank/emit lattices of an additive joint, without the `[B, T, U+1, V]` tensor.

    The joint is `logits = tanh(enc_proj[:, t, None] + pred_proj) @ output_kernel + bias`.
    Frames go through `lax.map` in chunks under `jax.checkpoint`: the forward pass keeps only
    the two `[B, T, U+1]` lattices, the backward pass recomputes one chunk's logits at a time.

    Args:
      enc_proj: `[B, T, H]` encoder output after the joint's encoder projection.
      pred_proj: `[B, U+1, H]` prediction network output after the joint's projection.
      output_kernel: `[H, V]`; output_bias: `[V]`.
      targets: `[B, U]` token ids.
    Returns:
      blank, emit lattices `[B, T, U+1]` float32.
    """
    batch, frames, hidden = enc_proj.shape
    width = pred_proj.shape[1]
    padded_targets = pad_targets(targets, width, blank)
    chunks = -(-frames // frames_per_chunk)
    enc = jnp.pad(enc_proj, ((0, 0), (0, chunks * frames_per_chunk - frames), (0, 0)))
    enc = enc.reshape(batch, chunks, frames_per_chunk, hidden).swapaxes(0, 1)

    @jax.checkpoint
    def chunk_lattice(enc_chunk):  # [B, C, H] -> 2 x [B, C, U+1]
        hidden_act = jnp.tanh(enc_chunk[:, :, None, :] + pred_proj[:, None, :, :])
        logits = jnp.einsum("bcuh,hv->bcuv", hidden_act, output_kernel,
                            preferred_element_type=jnp.float32) + output_bias
        normalizer = jax.nn.logsumexp(logits, axis=-1)
        target_logit = jnp.take_along_axis(
            logits, jnp.broadcast_to(padded_targets[:, None, :, None],
                                     (*logits.shape[:3], 1)), axis=-1)[..., 0]
        return logits[..., blank] - normalizer, target_logit - normalizer

    blank_lp, emit_lp = jax.lax.map(chunk_lattice, enc)  # [chunks, B, C, U+1]
    unchunk = lambda x: x.swapaxes(0, 1).reshape(batch, -1, width)[:, :frames]  # noqa: E731
    return unchunk(blank_lp), unchunk(emit_lp)


def rnnt_loss_fused(enc_proj: jax.Array, pred_proj: jax.Array, output_kernel: jax.Array,
                    output_bias: jax.Array, logit_lengths: jax.Array, targets: jax.Array,
                    target_lengths: jax.Array, *, blank: int = 0,
                    frames_per_chunk: int = 1) -> jax.Array:
    """Training loss: equals `rnnt_loss` on the additive joint's logits, in O(B T U) memory.

    Shapes as in `joint_lattice`; returns `[B]` float32 costs.
    """
    blank_lp, emit_lp = joint_lattice(enc_proj, pred_proj, output_kernel, output_bias, targets,
                                      blank=blank, frames_per_chunk=frames_per_chunk)
    return lattice_nll(blank_lp, emit_lp, logit_lengths, target_lengths)


def joint_logits(enc_proj: jax.Array, pred_proj: jax.Array, output_kernel: jax.Array,
                 output_bias: jax.Array) -> jax.Array:
    """The full `[B, T, U+1, V]` logits of the additive joint (reference and decoding)."""
    hidden_act = jnp.tanh(enc_proj[:, :, None, :] + pred_proj[:, None, :, :])
    return jnp.einsum("btuh,hv->btuv", hidden_act, output_kernel,
                      preferred_element_type=jnp.float32) + output_bias
