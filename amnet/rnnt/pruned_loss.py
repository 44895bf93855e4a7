"""Pruned RNN-T loss (Kuang et al., 2022, "Pruned RNN-T for fast, memory-efficient ASR training").

The full joint costs B T (U+1) H V; most of the lattice carries no probability mass. Two passes:

1. A "simple" joint, linear in the encoder and prediction outputs, `logits = am[t] + lm[u]`
   (am `[B, T, V]`, lm `[B, U+1, V]`: each side's own linear projection to the vocabulary),
   whose normalizer needs no `[B, T, U+1, V]` tensor:
     logsumexp_v(am[t, v] + lm[u, v]) = log(exp(am[t] - max am[t]) . exp(lm[u] - max lm[u]))
                                        + max am[t] + max lm[u].
   Its lattice loss is trained too (it must rank the nodes), and the gradient of that loss
   with respect to the lattice's blank and emit entries is each node's occupation
   probability (the posterior that the alignment passes through it).
2. For each frame t, the window of `s_range` consecutive token positions
   `[s_begin[t], s_begin[t] + s_range)` holding the most occupation. The full joint is
   evaluated only there (`[B, T, s_range, V]`), and the lattice recursion of `amnet.rnnt.loss`
   runs with every node outside the windows impossible.

Windows (`prune_ranges`) are clipped to [0, U_b + 1 - s_range], the first starts at 0, the
last valid frame's ends at U_b, s_begin is non-decreasing in t, and
s_begin[t + 1] - s_begin[t] <= s_range - 1 (the two windows share a node, so a blank can
cross). An utterance with more than (s_range - 1) T_b tokens cannot fit (its last window
misses U_b): `feasible` is False and its pruned cost 0, as CTC does (speech has far fewer
tokens per frame). With s_range >= U + 1 the windows cover the lattice and the pruned cost is
exactly `amnet.rnnt.rnnt_loss`.

Shapes: B utterances, T frames, U target tokens, V vocabulary, H joint width, R = s_range.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from amnet.rnnt.loss import NEG, lattice_nll, pad_targets


class PrunedCosts(NamedTuple):
    pruned: jax.Array  # [B] the full joint's cost on the pruned lattice (0 where infeasible)
    simple: jax.Array  # [B] the simple joint's cost (full lattice)
    s_begin: jax.Array  # [B, T] first token position of each frame's window
    feasible: jax.Array  # [B] bool: the windows connect (0, 0) to (T_b - 1, U_b)


def simple_lattice(am: jax.Array, lm: jax.Array, targets: jax.Array, *,
                   blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Blank and emit lattices `[B, T, U+1]` of the joint `am[t] + lm[u]`.

    Args:
      am: `[B, T, V]` encoder-side logits; lm: `[B, U+1, V]` prediction-side logits.
      targets: `[B, U]` token ids.
    """
    am, lm = am.astype(jnp.float32), lm.astype(jnp.float32)
    am_max = jax.lax.stop_gradient(jnp.max(am, axis=-1, keepdims=True))  # [B, T, 1]
    lm_max = jax.lax.stop_gradient(jnp.max(lm, axis=-1, keepdims=True))  # [B, U+1, 1]
    products = jnp.einsum("btv,buv->btu", jnp.exp(am - am_max), jnp.exp(lm - lm_max))
    # + tiny: when the two sides peak at different tokens, by more than ~87 nats together,
    # every product underflows; the normalizer is then overestimated instead of infinite (the
    # simple joint only places the windows and is trained away from such extremes).
    products = products + jnp.finfo(jnp.float32).tiny
    normalizer = jnp.log(products) + am_max + lm_max[..., 0][:, None, :]  # [B, T, U+1]
    padded = pad_targets(targets, lm.shape[1], blank)  # [B, U+1]
    am_target = jnp.take_along_axis(am, padded[:, None, :], axis=2)  # [B, T, U+1]
    lm_target = jnp.take_along_axis(lm, padded[:, :, None], axis=2)[..., 0]  # [B, U+1]
    blank_lp = am[..., blank][:, :, None] + lm[..., blank][:, None, :] - normalizer
    emit_lp = am_target + lm_target[:, None, :] - normalizer
    return blank_lp, emit_lp


def occupation(blank_lp: jax.Array, emit_lp: jax.Array, logit_lengths: jax.Array,
               target_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(costs `[B]`, occupation `[B, T, U+1]`): the lattice cost and, per node, the posterior
    probability that the alignment leaves it (by blank or by emitting), from one backward
    pass; the occupation carries no gradient."""
    costs, vjp = jax.vjp(lambda b, e: lattice_nll(b, e, logit_lengths, target_lengths),
                         blank_lp, emit_lp)
    blank_grad, emit_grad = vjp(jnp.ones_like(costs))
    return costs, jax.lax.stop_gradient(-(blank_grad + emit_grad))


def prune_ranges(occupancy: jax.Array, logit_lengths: jax.Array, target_lengths: jax.Array,
                 s_range: int) -> jax.Array:
    """s_begin `[B, T]` int32: per frame, the start of the `s_range` window with the most
    occupation, adjusted to the constraints of the module docstring.

    Args:
      occupancy: `[B, T, U+1]` node occupation (`occupation`).
    """
    batch, frames, width = occupancy.shape
    window = min(s_range, width)
    top = jnp.maximum(target_lengths + 1 - window, 0)[:, None]  # [B, 1] largest start
    prefix = jnp.pad(jnp.cumsum(occupancy, axis=2), ((0, 0), (0, 0), (1, 0)))
    mass = prefix[:, :, window:] - prefix[:, :, : width + 1 - window]  # [B, T, U+2-R]
    starts = jnp.arange(width + 1 - window)
    mass = jnp.where(starts[None, None, :] <= top[:, :, None], mass, -jnp.inf)
    s_begin = jnp.argmax(mass, axis=2).astype(jnp.int32)
    t = jnp.arange(frames, dtype=jnp.int32)[None, :]
    s_begin = jnp.where(t >= logit_lengths[:, None] - 1, top, s_begin)  # the end is U_b
    s_begin = jax.lax.cummin(s_begin, axis=1, reverse=True)  # non-decreasing, by lowering
    # s_begin[t] >= s_begin[t'] - (R - 1)(t' - t) for every t' > t: adjacent windows overlap.
    step = window - 1
    s_begin = jax.lax.cummax(s_begin - step * t, axis=1, reverse=True) + step * t
    # ... and s_begin[t] <= (R - 1) t: reachable from (0, 0). Both bounds keep the other.
    return jnp.minimum(jnp.minimum(s_begin, top), step * t).astype(jnp.int32)


def pruned_lattice(enc_proj: jax.Array, pred_proj: jax.Array, output_kernel: jax.Array,
                   output_bias: jax.Array, targets: jax.Array, s_begin: jax.Array,
                   s_range: int, *, blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Blank and emit lattices `[B, T, U+1]` of the full additive joint inside the windows,
    NEG outside; the joint is evaluated on `[B, T, R, V]` only.

    Args:
      enc_proj: `[B, T, H]`; pred_proj: `[B, U+1, H]`; output_kernel `[H, V]`, bias `[V]`.
      s_begin: `[B, T]` window starts (`prune_ranges`).
    """
    width = pred_proj.shape[1]
    window = min(s_range, width)
    positions = s_begin[:, :, None] + jnp.arange(window)  # [B, T, R]
    gather = jax.vmap(lambda rows, index: rows[index])  # per utterance
    pred = gather(pred_proj, positions)  # [B, T, R, H]
    hidden = jnp.tanh(enc_proj[:, :, None, :] + pred)
    logits = jnp.einsum("btrh,hv->btrv", hidden, output_kernel,
                        preferred_element_type=jnp.float32) + output_bias
    normalizer = jax.nn.logsumexp(logits, axis=-1)
    labels = gather(pad_targets(targets, width, blank), positions)  # [B, T, R]
    emit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0] - normalizer
    blank_lp = logits[..., blank] - normalizer
    # Back to lattice coordinates: node (t, u) is window entry u - s_begin[t].
    offset = jnp.arange(width)[None, None, :] - s_begin[:, :, None]  # [B, T, U+1]
    inside = (offset >= 0) & (offset < window)
    index = jnp.clip(offset, 0, window - 1)
    scatter = lambda x: jnp.where(inside, jnp.take_along_axis(x, index, axis=2), NEG)  # noqa: E731
    return scatter(blank_lp), scatter(emit)


def rnnt_loss_pruned(enc_proj: jax.Array, pred_proj: jax.Array, output_kernel: jax.Array,
                     output_bias: jax.Array, am: jax.Array, lm: jax.Array,
                     logit_lengths: jax.Array, targets: jax.Array, target_lengths: jax.Array,
                     *, s_range: int, blank: int = 0) -> PrunedCosts:
    """The pruned and simple costs `[B]` (see the module docstring; shapes there)."""
    if s_range < 2:
        raise ValueError(f"s_range must be >= 2 (a window must hold a node and its "
                         f"successor), got {s_range}")
    simple_blank, simple_emit = simple_lattice(am, lm, targets, blank=blank)
    simple, occupancy = occupation(simple_blank, simple_emit, logit_lengths, target_lengths)
    s_begin = prune_ranges(occupancy, logit_lengths, target_lengths, s_range)
    blank_lp, emit_lp = pruned_lattice(enc_proj, pred_proj, output_kernel, output_bias,
                                       targets, s_begin, s_range, blank=blank)
    pruned = lattice_nll(blank_lp, emit_lp, logit_lengths, target_lengths)
    last = jnp.take_along_axis(s_begin, logit_lengths[:, None] - 1, axis=1)[:, 0]
    feasible = last + min(s_range, pred_proj.shape[1]) > target_lengths
    return PrunedCosts(jnp.where(feasible, pruned, 0.0), simple, s_begin, feasible)
