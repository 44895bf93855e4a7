"""Hashed diff (HashedNets-style): `D[i] = ξ(i) · h[bucket(i)]` per selected tensor.

Each tensor has its own bucket vector `h` (`K` float32 values, trainable) and a 32-bit seed.
Bucket and sign of flat index `i` come from a seeded integer hash, computed identically by
JAX (training, `merge`) and NumPy (the device, `expand`); only `h` and the seed travel.
JAX is imported by the training-side functions only: the device side needs NumPy alone.

Variables (each mirrors the selected leaves of `params`):
  diff       h, float32 [K], trainable, starts at zero;
  diff_hash  seed, uint32 scalar.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from neuraldiff import tree
from neuraldiff.tree import Selector

Tree = Any
_GOLDEN = 0x9E3779B9


def _mix(x, xp):
    """A 32-bit integer finalizer (xorshift-multiply, "lowbias32"); uint32 -> uint32,
    wrapping multiplication (NumPy's overflow warning is silenced: wrapping is the point)."""
    if xp is np:
        with np.errstate(over="ignore"):
            return _mix_body(x, xp)
    return _mix_body(x, xp)


def _mix_body(x, xp):
    x = x ^ (x >> xp.uint32(16))
    x = x * xp.uint32(0x7FEB352D)
    x = x ^ (x >> xp.uint32(15))
    x = x * xp.uint32(0x846CA68B)
    return x ^ (x >> xp.uint32(16))


def buckets_and_signs(size: int, seed, buckets: int, xp=np):
    """(bucket [size] int32 in [0, buckets), sign [size] float32 ±1) of flat indices
    0..size-1; `xp` is numpy or jax.numpy, with bit-identical results."""
    if buckets < 1:
        raise ValueError(f"a hashed tensor needs at least one bucket, got {buckets}")
    index = xp.arange(size, dtype=xp.uint32)
    key = _mix(xp.asarray(seed, xp.uint32) ^ xp.uint32(_GOLDEN), xp)
    h = _mix(index ^ key, xp)
    bucket = (h % xp.uint32(buckets)).astype(xp.int32)
    sign_bit = _mix(h ^ xp.uint32(_GOLDEN), xp) >> xp.uint32(31)
    sign = xp.where(sign_bit == 1, xp.float32(1.0), xp.float32(-1.0))
    return bucket, sign


def tensor_seed(seed: int, name: str) -> int:
    """The seed of tensor `name` under the run's `seed` (distinct per tensor)."""
    return int(_mix(np.uint32((seed * _GOLDEN + zlib.crc32(name.encode())) & 0xFFFFFFFF), np))


def allocate_buckets(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Splits `total` buckets over tensors in proportion to their sizes (at least one each,
    never more than the tensor's size)."""
    if total < len(sizes):
        raise ValueError(f"{total} buckets cannot cover {len(sizes)} tensors")
    all_entries = sum(sizes.values())
    out = {n: min(s, max(1, int(total * s / all_entries))) for n, s in sizes.items()}
    # Hand out what rounding left, largest tensors first.
    left = total - sum(out.values())
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        if left <= 0:
            break
        extra = min(left, sizes[name] - out[name])
        out[name] += extra
        left -= extra
    return out


def init(params: Tree, buckets: Mapping[str, int], seed: int = 0,
         selector: Selector | None = None) -> dict[str, Tree]:
    """`{'diff': h zeros [K], 'diff_hash': seeds}` for the selected leaves; `buckets` gives K
    per leaf name (see `allocate_buckets`)."""
    import jax.numpy as jnp

    names = (selector or Selector()).names(params)
    if set(names) != set(buckets):
        raise ValueError(f"bucket counts given for {sorted(buckets)} but the selector picks "
                         f"{names}")
    return {"diff": tree.unflatten({n: jnp.zeros((buckets[n],), jnp.float32) for n in names}),
            "diff_hash": tree.unflatten({n: jnp.asarray(tensor_seed(seed, n), jnp.uint32)
                                         for n in names})}


def expand(h, seed, shape: tuple[int, ...], xp=np):
    """The dense diff `ξ ⊙ h[bucket]` of one tensor, `[*shape]` float32."""
    size = int(np.prod(shape, dtype=np.int64))
    bucket, sign = buckets_and_signs(size, seed, h.shape[0], xp)
    return (sign * h[bucket]).reshape(shape)


def merge(params: Tree, diff: Tree, seeds: Tree) -> Tree:
    """Effective weights `params + ξ ⊙ h[bucket]` on the hashed leaves (JAX, differentiable
    in `diff`)."""
    import jax.numpy as jnp

    flat = tree.flatten(params)
    seed_of = tree.flatten(seeds)
    for name, h in tree.flatten(diff).items():
        w = flat[name]
        flat[name] = w + expand(h, seed_of[name], w.shape, jnp).astype(w.dtype)
    return tree.unflatten(flat)
