"""From learned diffs and model deltas to package contents that fit a byte budget.

Budgets are bytes of the whole encoded package (header, manifest, indices, values, checksum,
signature), measured with `package.encoded_size`, never estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from neuraldiff import coding as coding_lib
from neuraldiff import hashed, tree
from neuraldiff import package as package_lib
from neuraldiff.package import TensorUpdate
from neuraldiff.sparse import Ranking, top_k_masks

Flat = Mapping[str, np.ndarray]


def model_bytes(params: Flat) -> int:
    """The bytes of a flat model's arrays as stored (what a budget share is a share of)."""
    return int(sum(v.nbytes for v in params.values()))


def budget_bytes(params: Flat, share: float) -> int:
    """The update budget that is `share` (0 < share <= 1) of the model's bytes."""
    if not 0 < share <= 1:
        raise ValueError(f"a budget share must be in (0, 1], got {share}")
    return int(share * model_bytes(params))


def sparse_updates(values: Flat, masks: Flat, coding: str, op: str = "add_sparse",
                   ) -> list[TensorUpdate]:
    """One sparse tensor update per tensor with at least one entry in its mask."""
    out = []
    for name in sorted(values):
        m = np.asarray(masks[name], bool).ravel()
        if m.any():
            indices = np.flatnonzero(m)
            out.append(TensorUpdate(name, op, tuple(values[name].shape), coding, indices=indices,
                                    values=np.asarray(values[name], np.float32).ravel()[indices]))
    return out


def hashed_updates(diff: Flat, seeds: Flat, shapes: Mapping[str, tuple], coding: str,
                   ) -> list[TensorUpdate]:
    """The bucket vectors `h` and seeds of a hashed diff (flat names)."""
    return [TensorUpdate(name, "add_hashed", tuple(shapes[name]), coding,
                         values=np.asarray(diff[name], np.float32), seed=int(seeds[name]))
            for name in sorted(diff)]


def fit_count(size_of: Callable[[int], int], budget_bytes: int, upper: int) -> int:
    """Largest k in [0, upper] with size_of(k) <= budget (size_of non-decreasing in k).

    Raises ValueError when even k = 0 does not fit.
    """
    if size_of(0) > budget_bytes:
        raise ValueError(f"a budget of {budget_bytes} bytes does not hold even an empty update "
                         f"({size_of(0)} bytes)")
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size_of(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_sparse(scores: Flat, values: Flat, budget_bytes: int, coding: str, *,
               method: str, op: str = "add_sparse", extra: Sequence[TensorUpdate] = (),
               scope: str = "global", max_keep: int | None = None,
               ) -> tuple[list[TensorUpdate], int]:
    """(updates, kept entries): the largest number (at most `max_keep`) of top-scoring entries
    whose package (with the `extra` updates) fits `budget_bytes`."""
    total = sum(int(np.size(s)) for s in scores.values())
    # Every kept entry costs at least its value's bytes: no k above this bound can fit.
    upper = min(total, budget_bytes // coding_lib.value_bytes(coding))
    if max_keep is not None:
        upper = min(upper, max_keep)
    ranking = Ranking(scores, limit=upper) if scope == "global" else None

    def updates(k: int) -> list[TensorUpdate]:
        masks = ranking.masks(k) if ranking else top_k_masks(dict(scores), k, scope)
        return sparse_updates(values, masks, coding, op) + list(extra)

    def size_of(k: int) -> int:
        return package_lib.encoded_size(method, updates(k), budget_bytes=budget_bytes)

    keep = fit_count(size_of, budget_bytes, upper)
    return updates(keep), keep


def bucket_count(shapes: Mapping[str, tuple], budget_bytes: int, coding: str, *,
                 method: str = "hashed") -> dict[str, int]:
    """Buckets per tensor of the largest hashed diff whose package fits `budget_bytes`
    (buckets in proportion to tensor sizes)."""
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}

    def updates(total: int) -> list[TensorUpdate]:
        buckets = hashed.allocate_buckets(sizes, total)
        return [TensorUpdate(n, "add_hashed", tuple(shapes[n]), coding,
                             values=np.zeros(buckets[n], np.float32), seed=2**32 - 1)
                for n in sorted(shapes)]

    def size_of(k: int) -> int:
        return package_lib.encoded_size(method, updates(len(sizes) + k),
                                        budget_bytes=budget_bytes)

    extra = fit_count(size_of, budget_bytes, sum(sizes.values()) - len(sizes))
    return hashed.allocate_buckets(sizes, len(sizes) + extra)


def from_diff(method: str, collections: Mapping[str, Flat], shapes: Mapping[str, tuple],
              coding: str, budget_bytes: int | None = None, scope: str = "global",
              ) -> tuple[list[TensorUpdate], dict]:
    """Package contents of a learned diff (`{'diff': ..., 'diff_mask' | 'diff_hash': ...}`,
    flat), and {kept} for a sparse diff. A sparse diff over the budget keeps its largest
    entries that fit; a hashed diff is shipped whole (its bucket count fixes its size)."""
    diff = {n: np.asarray(v, np.float32) for n, v in collections["diff"].items()}
    if method == "hashed":
        return hashed_updates(diff, collections["diff_hash"], shapes, coding), {}
    if method != "sparse":
        raise ValueError(f"a learned diff is sparse or hashed, got {method!r}")
    masks = {n: np.asarray(m, bool) for n, m in collections["diff_mask"].items()}
    in_mask = sum(int(m.sum()) for m in masks.values())
    scores = {n: np.where(masks[n], np.abs(diff[n]), -1.0) for n in diff}
    if budget_bytes is None:
        return (sparse_updates(diff, top_k_masks(scores, in_mask, scope), coding),
                {"kept": in_mask})
    contents, keep = fit_sparse(scores, diff, budget_bytes, coding, method=method, scope=scope,
                                max_keep=in_mask)
    return contents, {"kept": keep}


def flat(params) -> dict[str, np.ndarray]:
    """A nested or flat model as a flat dict of NumPy arrays."""
    if any(isinstance(v, Mapping) for v in params.values()):
        params = tree.flatten(params)
    return {n: np.asarray(v) for n, v in params.items()}
