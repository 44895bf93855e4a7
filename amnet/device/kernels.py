"""Linear maps `x [..., in] -> [..., out]` as a device stores them.

    Dense     one float32 matrix `[in, out]`
    Sparse    CSR of the transposed matrix (`[out, in]`, SciPy): only the non-zeros are stored
              and multiplied, 2 * nnz FLOPs (`amnet.flops`), for a kernel trained sparse
    LowRank   two thin products, `(x U) V` with U `[in, r]`, V `[r, out]`

`linear(params, name, spec)` builds the one a parameter tree holds: `name` for dense and sparse
kernels, `name_u` / `name_v` for low rank (`amnet.lstm.weight_param`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse

from amnet.flops import LinearSpec


class Dense:
    def __init__(self, kernel: np.ndarray):
        self.kernel = np.ascontiguousarray(kernel, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.kernel

    @property
    def shape(self) -> tuple[int, int]:
        return self.kernel.shape


class Sparse:
    def __init__(self, kernel: np.ndarray):
        self.transposed = scipy.sparse.csr_matrix(np.asarray(kernel, np.float32).T)
        self._shape = kernel.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.transposed @ x.T, np.float32).T

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def nnz(self) -> int:
        return int(self.transposed.nnz)


class LowRank:
    def __init__(self, u: np.ndarray, v: np.ndarray):
        self.u = np.ascontiguousarray(u, np.float32)
        self.v = np.ascontiguousarray(v, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.u) @ self.v

    @property
    def shape(self) -> tuple[int, int]:
        return self.u.shape[0], self.v.shape[1]


Linear = Dense | Sparse | LowRank
DENSE = LinearSpec()


def linear(params: Mapping[str, np.ndarray], name: str, spec: LinearSpec = DENSE) -> Linear:
    """The kernel `name` of a flat parameter dict, stored as `spec` says."""
    if spec.kind == "lowrank":
        return LowRank(params[f"{name}_u"], params[f"{name}_v"])
    if spec.kind == "sparse":
        return Sparse(params[name])
    return Dense(params[name])
