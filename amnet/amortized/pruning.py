"""Gradual magnitude pruning of `sparse(s)` encoder branches, then a fixed mask.

Sparsity schedule (Zhu & Gupta, 2017), from step t0 to t1, pruning every `every` steps:
  s(t) = s_f * (1 - (1 - (t - t0) / (t1 - t0))^3)      (0 before t0, s_f after t1)
At a pruning step each kernel of the branch keeps its largest-magnitude (1 - s(t)) share of
weights and the rest become exactly zero. At every other step from t0 on, weights that were
zero before the update are zeroed again after it. The mask is therefore the kernel's own zero
pattern: no extra state, checkpoints unchanged, and after t1 the mask is fixed. Biases are
not pruned.

Block-sparse branches (`sparse(s,AxB)`) prune whole blocks of A inputs x B outputs, balanced:
each group of B output columns keeps its k(t) = round((1 - s(t)) * in / A) blocks of largest
L2 norm (at least one), so every group holds the same number of blocks, the structure
`amnet.device.kernels.BlockSparse` multiplies at dense speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from amnet.rnnt import flops
from amnet.rnnt.flops import LinearSpec

Params = Any
KERNELS = ("input_kernel", "recurrent_kernel", "projection_kernel")


def sparsity_at(step: jax.Array | int, final: float, config: ml_collections.ConfigDict):
    """s(step) for a branch whose target sparsity is `final`."""
    span = max(config.end_step - config.start_step, 1)
    progress = jnp.clip((step - config.start_step) / span, 0.0, 1.0)
    return final * (1.0 - (1.0 - progress) ** 3)


def magnitude_prune(kernel: jax.Array, sparsity: jax.Array | float) -> jax.Array:
    """Zeroes the round(sparsity * size) smallest-magnitude entries of `kernel`."""
    size = kernel.size
    count = jnp.round(sparsity * size).astype(jnp.int32)
    order = jnp.argsort(jnp.abs(kernel).ravel())
    ranks = jnp.zeros((size,), jnp.int32).at[order].set(jnp.arange(size, dtype=jnp.int32))
    return jnp.where(ranks.reshape(kernel.shape) < count, 0.0, kernel).astype(kernel.dtype)


def block_prune(kernel: jax.Array, sparsity: jax.Array | float, spec: LinearSpec,
                ) -> jax.Array:
    """Keeps, in each group of `spec.block[1]` output columns of an `[in, out]` kernel, the
    round((1 - sparsity) * blocks) blocks (at least one) of largest L2 norm; zeroes the rest."""
    (rows, cols), (num_in, num_out) = spec.block, kernel.shape
    blocks, _, groups = flops.block_grid(num_in, num_out, spec)
    norms = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32)).reshape(
        blocks, rows, groups, cols), axis=(1, 3)))  # [blocks, groups]
    kept = jnp.maximum(1, jnp.round((1.0 - sparsity) * blocks)).astype(jnp.int32)
    ranks = jnp.argsort(jnp.argsort(-norms, axis=0, stable=True), axis=0)  # 0 = largest
    keep = jnp.repeat(jnp.repeat(ranks < kept, rows, axis=0), cols, axis=1)
    return jnp.where(keep, kernel, 0.0).astype(kernel.dtype)


def sparse_branches(branch_specs: tuple[str, ...]) -> dict[str, LinearSpec]:
    """{encoder branch module name: its spec} for the `sparse(s)` branches."""
    specs = {f"branch_{k}": LinearSpec.parse(s) for k, s in enumerate(branch_specs)}
    return {name: s for name, s in specs.items() if s.kind == "sparse"}


def make_pruner(branch_specs: tuple[str, ...], config: ml_collections.ConfigDict,
                ) -> Callable[[Params, Params, jax.Array], Params] | None:
    """Returns `prune(new_params, old_params, step) -> params`, applied after each update, or
    None when no branch is sparse. `step` is the step that produced `new_params` (1-based)."""
    targets = sparse_branches(branch_specs)
    if not targets:
        return None
    if config.every <= 0 or config.end_step < config.start_step:
        raise ValueError(f"bad pruning schedule {config.to_dict()}: need every > 0 and "
                         "end_step >= start_step")

    def prune(new: Params, old: Params, step: jax.Array) -> Params:
        in_window = (step >= config.start_step) & (step <= config.end_step)
        is_prune_step = in_window & ((step - config.start_step) % config.every == 0)
        active = step >= config.start_step

        def visit(path, new_leaf, old_leaf):
            names = [getattr(k, "key", None) for k in path]
            branch = next((n for n in names if n in targets), None)
            if branch is None or names[-1] not in KERNELS:
                return new_leaf
            spec = targets[branch]
            sparsity = sparsity_at(step, spec.sparsity, config)
            kept = jnp.where(active & (old_leaf == 0), 0.0, new_leaf).astype(new_leaf.dtype)
            pruned = (lambda: block_prune(new_leaf, sparsity, spec)) if spec.block else (
                lambda: magnitude_prune(new_leaf, sparsity))
            return jax.lax.cond(is_prune_step, pruned, lambda: kept)

        return jax.tree_util.tree_map_with_path(visit, new, old)

    return prune


def measured_sparsity(params: Params, branch_specs: tuple[str, ...]) -> dict[str, float]:
    """{sparse branch: share of exact zeros over its kernels}."""
    out = {}
    for branch in sparse_branches(branch_specs):
        leaves = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
            params["encoder"][branch]) if getattr(path[-1], "key", None) in KERNELS]
        zeros = sum(int(jnp.sum(leaf == 0)) for leaf in leaves)
        out[branch] = zeros / sum(leaf.size for leaf in leaves)
    return out
