"""Initialize an AmNet (or a single sparse / low-rank encoder) from a trained dense model.

Every part shared with the dense model (prediction network, joint, embeddings) is copied.
Each encoder branch starts from the dense encoder's weights:
  dense, sparse(s)  the dense kernels (a sparse branch is then pruned gradually,
  `amnet.amortized.pruning`)
  lowrank(r)        the best rank-r approximation of each kernel (truncated SVD, W ~= U V with
                    U = U_r sqrt(S_r), V = sqrt(S_r) V_r^T)
The arbitrator keeps its fresh initialization.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from amnet.rnnt.flops import LinearSpec

Params = Any


def low_rank_factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """`kernel` `[in, out]` -> (u `[in, r]`, v `[r, out]`) with u @ v its best rank-r fit."""
    left, singular, right = np.linalg.svd(np.asarray(kernel, np.float64), full_matrices=False)
    scale = np.sqrt(singular[:rank])
    return ((left[:, :rank] * scale).astype(np.float32),
            (scale[:, None] * right[:rank]).astype(np.float32))


def _branch_from_dense(template: dict, dense: dict, spec: LinearSpec, where: str) -> dict:
    out = {}
    for layer, weights in template.items():
        if layer not in dense:
            raise ValueError(f"warm start: the dense encoder has no {layer} (needed by {where})")
        source = dense[layer]
        out[layer] = {}
        for name, value in weights.items():
            base = name.removesuffix("_u").removesuffix("_v")
            if base not in source:
                raise ValueError(f"warm start: the dense {layer} has no {base} for {where}/{name}")
            kernel = np.asarray(source[base])
            if spec.kind == "lowrank" and name != base:
                u, v = low_rank_factors(kernel, spec.rank)
                kernel = u if name.endswith("_u") else v
            if kernel.shape != value.shape:
                raise ValueError(f"warm start: {where}/{layer}/{name} has shape {value.shape}, "
                                 f"the dense model gives {kernel.shape}")
            out[layer][name] = jnp.asarray(kernel, value.dtype)
    return out


def from_dense(template: Params, dense: Params, branch_specs: tuple[str, ...]) -> Params:
    """New params shaped like `template` (a freshly initialized model with `branch_specs`),
    filled from the params `dense` of a single-branch dense model of the same sizes."""
    dense_encoder = dense["encoder"]
    if set(dense_encoder) != {"branch_0"}:
        raise ValueError(f"warm start needs a single-branch dense encoder, got "
                         f"{sorted(dense_encoder)}")
    params = {}
    for part, value in template.items():
        if part == "encoder":
            params[part] = {}
            for name, branch in value.items():
                if name == "arbitrator":
                    params[part][name] = branch
                    continue
                spec = LinearSpec.parse(branch_specs[int(name.removeprefix("branch_"))])
                params[part][name] = _branch_from_dense(branch, dense_encoder["branch_0"], spec,
                                                        f"encoder/{name}")
            continue
        if part not in dense:
            raise ValueError(f"warm start: the dense model has no {part}")
        shapes = jax.tree.map(jnp.shape, value), jax.tree.map(jnp.shape, dense[part])
        if shapes[0] != shapes[1]:
            raise ValueError(f"warm start: {part} differs: {shapes[0]} vs dense {shapes[1]}")
        params[part] = jax.tree.map(jnp.asarray, dense[part])
    return params
