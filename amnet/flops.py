"""Analytical FLOP counts per encoder frame (multiply and add count as one FLOP each).

Linear maps `x [in] -> [out]`:
  dense          2 * in * out
  sparse(s)      2 * nnz, nnz = round((1 - s) * in * out)
  lowrank(r)     2 * r * (in + out)          (W ~= U V, U [in, r], V [r, out])
LSTM cell of H units (gates i, f, g, o) on top of its two matmuls:
  gate pre-activations: 4H (sum of the two products) + 4H (bias)
  state update c' = f c + i g, h' = o tanh(c'): 3H multiplies + H add
  non-linearities: 3H sigmoids + 2H tanh, counted as one FLOP each (XLA reports them apart, as
  "transcendentals").
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LinearSpec:
    """How a weight matrix is stored and multiplied: `dense`, `sparse` or `lowrank`."""

    kind: str = "dense"
    sparsity: float = 0.0  # sparse: share of zero weights
    rank: int = 0  # lowrank: r

    def __post_init__(self):
        if self.kind not in ("dense", "sparse", "lowrank"):
            raise ValueError(f"unknown linear kind {self.kind!r}")
        if self.kind == "sparse" and not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.kind == "lowrank" and self.rank <= 0:
            raise ValueError(f"lowrank needs a positive rank, got {self.rank}")


def linear_flops(in_dim: int, out_dim: int, spec: LinearSpec = LinearSpec()) -> int:
    if spec.kind == "sparse":
        return 2 * round((1.0 - spec.sparsity) * in_dim * out_dim)
    if spec.kind == "lowrank":
        return 2 * spec.rank * (in_dim + out_dim)
    return 2 * in_dim * out_dim


def lstm_elementwise_flops(hidden: int) -> int:
    """Per frame, excluding the matmuls: 8H gate sums and biases, 4H state update, 5H
    non-linearities."""
    return 17 * hidden


def lstm_layer_flops(input_dim: int, hidden: int, projection: int | None = None,
                     spec: LinearSpec = LinearSpec()) -> int:
    """One LSTM(P) layer, one frame, all matmuls stored as `spec`."""
    output = projection or hidden
    flops = linear_flops(input_dim, 4 * hidden, spec) + linear_flops(output, 4 * hidden, spec)
    if projection:
        flops += linear_flops(hidden, projection, spec)
    return flops + lstm_elementwise_flops(hidden)


def encoder_frame_flops(input_dim: int, hidden: int, num_layers: int,
                        projection: int | None = None, spec: LinearSpec = LinearSpec()) -> int:
    """A stack of LSTM layers, one 30 ms frame."""
    dims = [input_dim] + [projection or hidden] * (num_layers - 1)
    return sum(lstm_layer_flops(d, hidden, projection, spec) for d in dims)
