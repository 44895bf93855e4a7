"""Linear maps `x [..., in] -> [..., out]` as a device stores them.

    Dense     one float32 matrix `[in, out]`
    Sparse    CSR of the transposed matrix (`[out, in]`, SciPy): only the non-zeros are stored
              and multiplied, 2 * nnz FLOPs (`amnet.rnnt.flops`), for a kernel trained sparse
    LowRank   two thin products, `(x U) V` with U `[in, r]`, V `[r, out]`
    Int8      a dense matrix stored as int8 with one float32 scale per output column
              (symmetric: W[:, j] ~= q[:, j] * s_j, s_j = max_i |W[i, j]| / 127, so each entry
              is off by at most s_j / 2): a quarter of the bytes; the product converts q to
              float32 on the fly (NumPy has no int8 GEMM), trading speed for memory

`linear(params, name, spec)` builds the one a parameter tree holds: `name` for dense and sparse
kernels, `name_u` / `name_v` for low rank (`amnet.rnnt.lstm.weight_param`). `stacked` joins two maps
of the same output width applied to two inputs, `[x, h] -> x W_x + h W_h`, into one (one sparse
matrix, one dense matrix, or block-diagonal low-rank factors): at batch 1 a NumPy call costs
microseconds whatever its size, so fewer, larger products are what makes thin ones pay off.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse

from amnet.rnnt.flops import LinearSpec


class Dense:
    def __init__(self, kernel: np.ndarray):
        self.kernel = np.ascontiguousarray(kernel, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.kernel

    @property
    def shape(self) -> tuple[int, int]:
        return self.kernel.shape


class Sparse:
    def __init__(self, transposed: scipy.sparse.csr_matrix):
        self.transposed = transposed  # [out, in]

    @classmethod
    def of(cls, kernel: np.ndarray) -> Sparse:
        """From a dense `[in, out]` kernel (its exact zeros are left out)."""
        return cls(scipy.sparse.csr_matrix(np.asarray(kernel, np.float32).T))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.transposed @ x.T, np.float32).T

    @property
    def shape(self) -> tuple[int, int]:
        return self.transposed.shape[1], self.transposed.shape[0]

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


INT8_MAX = int(np.iinfo(np.int8).max)  # symmetric: -127..127


class Int8:
    def __init__(self, q: np.ndarray, scale: np.ndarray):
        self.q = np.ascontiguousarray(q, np.int8)  # [in, out]
        self.scale = np.asarray(scale, np.float32)  # [out]

    @classmethod
    def of(cls, kernel: np.ndarray) -> Int8:
        """Symmetric per-output-column quantization of a dense `[in, out]` kernel."""
        kernel = np.asarray(kernel, np.float32)
        peak = np.abs(kernel).max(axis=0)
        scale = np.where(peak > 0, peak / INT8_MAX, 1.0).astype(np.float32)
        return cls(np.clip(np.rint(kernel / scale), -INT8_MAX, INT8_MAX), scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.q.astype(np.float32)) * self.scale

    def dequantized(self) -> np.ndarray:
        return self.q.astype(np.float32) * self.scale

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape


Linear = Dense | Sparse | LowRank | Int8
DENSE = LinearSpec()


def stacked(a: Linear, b: Linear) -> Linear:
    """One map of `[x, h]` (x for `a`, h for `b`) equal to `a(x) + b(h)`; same kind."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        (m, r), (n, s) = a.u.shape, b.u.shape
        u = np.zeros((m + n, r + s), np.float32)
        u[:m, :r], u[m:, r:] = a.u, b.u
        return LowRank(u, np.concatenate([a.v, b.v]))
    if isinstance(a, Sparse) and isinstance(b, Sparse):
        return Sparse(scipy.sparse.hstack([a.transposed, b.transposed], format="csr"))
    if isinstance(a, Dense) and isinstance(b, Dense):
        return Dense(np.concatenate([a.kernel, b.kernel]))
    raise TypeError(f"cannot stack a {type(a).__name__} and a {type(b).__name__}")


def int8(kernel: Linear) -> Linear:
    """A dense map stored as `Int8`; sparse and low-rank maps stay as they are (already small)."""
    return Int8.of(kernel.kernel) if isinstance(kernel, Dense) else kernel


def stored(kernel: Linear, as_int8: bool) -> Linear:
    """`kernel`, as `int8` stores it when `as_int8`."""
    return int8(kernel) if as_int8 else kernel


def nbytes(kernel: Linear) -> int:
    """Bytes of a map's weights as stored (CSR: values and indices)."""
    if isinstance(kernel, Dense):
        return kernel.kernel.nbytes
    if isinstance(kernel, Int8):
        return kernel.q.nbytes + kernel.scale.nbytes
    if isinstance(kernel, LowRank):
        return kernel.u.nbytes + kernel.v.nbytes
    if not isinstance(kernel, Sparse):
        raise TypeError(f"not a linear map: {type(kernel).__name__}")
    m = kernel.transposed
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


def linear(params: Mapping[str, np.ndarray], name: str, spec: LinearSpec = DENSE) -> Linear:
    """The kernel `name` of a flat parameter dict, stored as `spec` says."""
    if spec.kind == "lowrank":
        return LowRank(params[f"{name}_u"], params[f"{name}_v"])
    if spec.kind == "sparse":
        return Sparse.of(params[name])
    return Dense(params[name])
