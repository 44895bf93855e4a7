"""Sparse diff: `W = W_old + M ⊙ D` on the selected leaves.

Variables (each mirrors the selected leaves of `params`):
  diff       D, float32, trainable, starts at zero;
  diff_mask  M, bool, starts all true; pruning turns entries off, never on again.

Training starts dense; `density_schedule` then lowers the share of entries kept (the
"temperature" of the diff is turned up step by step, cubic as in Zhu & Gupta 2017), and at each
pruning step `prune` keeps the largest |D| (globally or per tensor). After the last pruning step
the mask is fixed and the diff is fine-tuned (entries outside the mask stay exactly zero).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neuraldiff import tree
from neuraldiff.tree import Selector

Tree = Any


def init(params: Tree, selector: Selector | None = None) -> dict[str, Tree]:
    """`{'diff': zeros, 'diff_mask': ones}` over the leaves `selector` picks."""
    flat = tree.flatten(params)
    names = (selector or Selector()).names(params)
    return {"diff": tree.unflatten({n: jnp.zeros(flat[n].shape, jnp.float32) for n in names}),
            "diff_mask": tree.unflatten({n: jnp.ones(flat[n].shape, bool) for n in names})}


def merge(params: Tree, diff: Tree, mask: Tree) -> Tree:
    """Effective weights: `params + mask ⊙ diff` where a diff exists, `params` elsewhere."""
    flat = tree.flatten(params)
    masks = tree.flatten(mask)
    for name, d in tree.flatten(diff).items():
        w = flat[name]
        flat[name] = w + jnp.where(masks[name], d, 0).astype(w.dtype)
    return tree.unflatten(flat)


def density_schedule(final_density: float, begin_step: int, end_step: int,
                     power: float = 3.0) -> optax.Schedule:
    """Share of diff entries kept at a step: 1 until `begin_step`, then
    `final + (1 - final) * (1 - t/T)^power`, `final_density` from `end_step` on."""
    if not 0.0 < final_density <= 1.0:
        raise ValueError(f"final density must be in (0, 1], got {final_density}")
    if end_step <= begin_step:
        raise ValueError(f"pruning must end after it begins ({begin_step} -> {end_step})")
    return optax.polynomial_schedule(init_value=1.0, end_value=final_density, power=power,
                                     transition_steps=end_step - begin_step,
                                     transition_begin=begin_step)


class Ranking:
    """The entries of several tensors ranked by score, highest first, ties by tensor name and
    then position: the masks of the top k for any k without ranking again (fitting a budget
    tries many k). With `limit`, only the entries scoring at least the limit-th largest score
    are sorted (all of them: ties at that score included); a larger k sorts everything then."""

    def __init__(self, scores: dict[str, np.ndarray], limit: int | None = None):
        self.shapes = {n: np.shape(scores[n]) for n in sorted(scores)}
        self._flat = -np.concatenate([np.ravel(scores[n]) for n in self.shapes])
        self.size = self._flat.size
        if limit is not None and 0 < limit < self.size:
            threshold = np.partition(self._flat, limit - 1)[limit - 1]
            self.order = self._sorted(np.flatnonzero(self._flat <= threshold))
        else:
            self.order = self._sorted(np.arange(self.size))

    def _sorted(self, positions: np.ndarray) -> np.ndarray:
        return positions[np.argsort(self._flat[positions], kind="stable")]

    def masks(self, keep: int) -> dict[str, np.ndarray]:
        if not 0 <= keep <= self.size:
            raise ValueError(f"cannot keep {keep} of {self.size} entries")
        if keep > self.order.size:
            self.order = self._sorted(np.arange(self.size))
        chosen = np.zeros(self.size, bool)
        chosen[self.order[:keep]] = True
        masks, start = {}, 0
        for name, shape in self.shapes.items():
            count = int(np.prod(shape))
            masks[name] = chosen[start:start + count].reshape(shape)
            start += count
        return masks


def top_k_masks(scores: dict[str, np.ndarray], keep: int, scope: str = "global",
                ) -> dict[str, np.ndarray]:
    """Boolean masks keeping the `keep` largest scores, over all tensors (`global`) or the same
    share of each tensor (`per_tensor`). Exactly `keep` entries are kept globally (ties broken by
    position); per tensor each keeps `round(keep * size / total)`, at least one.
    """
    scores = {n: scores[n] for n in sorted(scores)}  # ties break the same in every process
    total = sum(s.size for s in scores.values())
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} entries")
    if scope == "global":
        return Ranking(scores).masks(keep)
    if scope == "per_tensor":
        masks = {}
        for name, s in scores.items():
            k = min(s.size, max(1, round(keep * s.size / total))) if keep else 0
            m = np.zeros(s.size, bool)
            if k:
                m[np.argpartition(-s.ravel(), k - 1)[:k]] = True
            masks[name] = m.reshape(s.shape)
        return masks
    raise ValueError(f"unknown pruning scope {scope!r}; choose global or per_tensor")


def prune(diff: Tree, mask: Tree, keep: int, scope: str = "global") -> tuple[Tree, Tree]:
    """(diff, mask) keeping the `keep` largest |D| among entries still in the mask; the rest
    of D becomes exactly zero (host-side, numpy)."""
    d = {n: np.asarray(v, np.float32) for n, v in tree.flatten(diff).items()}
    m = {n: np.asarray(v, bool) for n, v in tree.flatten(mask).items()}
    # Entries already pruned score -1 so that they are never chosen again.
    scores = {n: np.where(m[n], np.abs(d[n]), -1.0) for n in d}
    if keep > sum(int(v.sum()) for v in m.values()):
        raise ValueError(f"cannot keep {keep} entries, only "
                         f"{sum(int(v.sum()) for v in m.values())} remain in the mask")
    new_mask = top_k_masks(scores, keep, scope)
    new_mask = {n: new_mask[n] & m[n] for n in d}
    return (tree.unflatten({n: np.where(new_mask[n], d[n], 0.0).astype(np.float32) for n in d}),
            tree.unflatten(new_mask))


def count(mask: Tree) -> tuple[int, int]:
    """(entries kept, entries in total) of a mask (nested or flat)."""
    leaves = [np.asarray(v) for v in jax.tree.leaves(mask)]
    return int(sum(v.sum() for v in leaves)), int(sum(v.size for v in leaves))
