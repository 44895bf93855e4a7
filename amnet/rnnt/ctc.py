"""CTC on the encoder: the auxiliary loss of the RNN-T recipe, and its greedy decoding.

A linear head maps the encoder output `[B, T, P]` to logits `[B, T, V]` over the transducer's
vocabulary (id 0 = blank). Its loss, -log sum over alignments of prod_t p_t(a_t), supervises
the encoder directly: every frame must carry the label it aligns to, which the RNN-T loss alone
lets the prediction network learn instead (docs/rnnt.md, the recipe). The head is used only in
training and for the CTC greedy WER; the recognizer decodes with the transducer.

An utterance whose labels cannot be aligned to its frames (T < U + repeated neighbours, each
repeat needs a blank between) has no CTC path: its cost is 0 and it is counted as infeasible.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def min_frames(targets: jax.Array, target_lengths: jax.Array) -> jax.Array:
    """Frames a CTC alignment of each target sequence needs: U + repeated neighbours `[B]`."""
    positions = jnp.arange(targets.shape[1])
    valid = positions[None, :] < target_lengths[:, None]
    repeats = valid[:, 1:] & (targets[:, 1:] == targets[:, :-1])
    return target_lengths + jnp.sum(repeats, axis=1)


def ctc_loss(logits: jax.Array, logit_lengths: jax.Array, targets: jax.Array,
             target_lengths: jax.Array, *, blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Per-utterance CTC costs -log P(targets | logits) `[B]` (0 where infeasible) and the
    feasibility mask `[B]` (bool).

    logits `[B, T, V]`, logit_lengths `[B]`, targets `[B, U]` right-padded, target_lengths `[B]`.
    """
    frames, labels = logits.shape[1], targets.shape[1]
    logit_paddings = (jnp.arange(frames)[None, :] >= logit_lengths[:, None]).astype(jnp.float32)
    label_paddings = (jnp.arange(labels)[None, :] >= target_lengths[:, None]).astype(jnp.float32)
    feasible = (min_frames(targets, target_lengths) <= logit_lengths) & (logit_lengths > 0)
    costs = optax.ctc_loss(logits.astype(jnp.float32), logit_paddings, targets, label_paddings,
                           blank_id=blank)
    return jnp.where(feasible, costs, 0.0), feasible


def greedy_decode(logits: jax.Array, lengths: jax.Array, *,
                  blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Best path: argmax per frame, repeats merged, blanks removed.

    logits `[B, T, V]`, lengths `[B]` -> tokens `[B, T]` (0-padded), token lengths `[B]`.
    """
    batch, frames, _ = logits.shape
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, T]
    previous = jnp.concatenate([jnp.full((batch, 1), blank, jnp.int32), best[:, :-1]], axis=1)
    valid = jnp.arange(frames)[None, :] < lengths[:, None]
    keep = valid & (best != blank) & (best != previous)
    position = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, frames)  # frames: dropped
    tokens = jnp.zeros((batch, frames + 1), jnp.int32).at[
        jnp.arange(batch)[:, None], position].set(best)[:, :frames]
    return tokens, jnp.sum(keep, axis=1).astype(jnp.int32)
