"""Linear maps `x [..., in] -> [..., out]` as a device stores them.

    Dense     one float32 matrix `[in, out]`
    Sparse    CSR of the transposed matrix (`[out, in]`, SciPy): only the non-zeros are stored
              and multiplied, 2 * nnz FLOPs (`amnet.rnnt.flops`), for a kernel trained sparse
    BlockSparse  balanced blocks (`sparse(s,AxB)`): each group g of B output columns reads
              the same number K of input rows `rows[g]`, with its weights `values[g]`
              `[K, B]`: a gather of x and one batched product `[G, n, K] @ [G, K, B]`, which
              runs at dense speed where CSR gathers entry by entry
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


class BlockSparse:
    def __init__(self, rows: np.ndarray, values: np.ndarray, num_in: int, block_rows: int):
        self.rows = np.ascontiguousarray(rows, np.intp)  # [G, K] input rows of each group
        self.values = np.ascontiguousarray(values, np.float32)  # [G, K, B]
        self.num_in = num_in
        self.block_rows = block_rows  # A: K = kept blocks x A

    @classmethod
    def of(cls, kernel: np.ndarray, block: tuple[int, int]) -> BlockSparse:
        """From a dense `[in, out]` kernel: each group of `block[1]` columns keeps its blocks of
        `block[0]` rows that hold a non-zero; groups with fewer than the most are topped up
        with zero blocks, so any kernel is represented exactly (and a balanced one without
        padding)."""
        kernel = np.asarray(kernel, np.float32)
        (num_in, num_out), (a, b) = kernel.shape, block
        if num_in % a or num_out % b:
            raise ValueError(f"a {list(kernel.shape)} kernel does not split into blocks of "
                             f"{a} inputs x {b} outputs")
        grid = kernel.reshape(num_in // a, a, num_out // b, b)
        live = np.any(grid != 0, axis=(1, 3))  # [blocks, groups]
        count = max(1, int(live.sum(axis=0).max()))
        # Live blocks first (stable: in row order), then zero blocks to fill up to `count`.
        chosen = np.sort(np.argsort(~live, axis=0, kind="stable")[:count], axis=0).T  # [G, k]
        rows = (chosen[:, :, None] * a + np.arange(a)).reshape(len(chosen), count * a)
        values = np.stack([kernel[r, g * b:(g + 1) * b] for g, r in enumerate(rows)])
        return cls(rows, values, num_in, a)

    @classmethod
    def hstack(cls, first: BlockSparse, second: BlockSparse) -> BlockSparse:
        """`[x, h] -> first(x) + second(h)` as one map (the same output groups)."""
        if (first.values.shape[::2], first.block_rows) != (second.values.shape[::2],
                                                           second.block_rows):
            raise ValueError("block-sparse maps with other blocks cannot be stacked")
        return cls(np.concatenate([first.rows, second.rows + first.num_in], axis=1),
                   np.concatenate([first.values, second.values], axis=1),
                   first.num_in + second.num_in, first.block_rows)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = x.reshape(-1, x.shape[-1])  # [n, in]
        gathered = rows[:, self.rows].transpose(1, 0, 2)  # [G, n, K]
        out = np.matmul(gathered, self.values)  # [G, n, B]
        return out.transpose(1, 0, 2).reshape(*x.shape[:-1], self.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        groups, _, width = self.values.shape
        return self.num_in, groups * width

    @property
    def nnz(self) -> int:
        return int(self.values.size)


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


Linear = Dense | Sparse | BlockSparse | LowRank | Int8
DENSE = LinearSpec()


def stacked(a: Linear, b: Linear) -> Linear:
    """One map of `[x, h]` (x for `a`, h for `b`) equal to `a(x) + b(h)`; same kind."""
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        (m, r), (n, s) = a.u.shape, b.u.shape
        u = np.zeros((m + n, r + s), np.float32)
        u[:m, :r], u[m:, r:] = a.u, b.u
        return LowRank(u, np.concatenate([a.v, b.v]))
    if isinstance(a, BlockSparse) and isinstance(b, BlockSparse):
        return BlockSparse.hstack(a, b)
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
    """Bytes of a map's weights as stored (CSR and blocks: values and indices)."""
    if isinstance(kernel, Dense):
        return kernel.kernel.nbytes
    if isinstance(kernel, Int8):
        return kernel.q.nbytes + kernel.scale.nbytes
    if isinstance(kernel, LowRank):
        return kernel.u.nbytes + kernel.v.nbytes
    if isinstance(kernel, BlockSparse):  # values and one int32 block index per block
        return kernel.values.nbytes + 4 * kernel.rows.size // kernel.block_rows
    if not isinstance(kernel, Sparse):
        raise TypeError(f"not a linear map: {type(kernel).__name__}")
    m = kernel.transposed
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


def linear(params: Mapping[str, np.ndarray], name: str, spec: LinearSpec = DENSE) -> Linear:
    """The kernel `name` of a flat parameter dict, stored as `spec` says."""
    if spec.kind == "lowrank":
        return LowRank(params[f"{name}_u"], params[f"{name}_v"])
    if spec.kind == "sparse" and spec.block:
        return BlockSparse.of(params[name], spec.block)
    if spec.kind == "sparse":
        return Sparse.of(params[name])
    return Dense(params[name])
